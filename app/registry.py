"""The models this server serves: every ``*.onnx`` in the models folder, loaded once.

At start-up :meth:`ModelRegistry.load` opens each file, reads its :class:`ModelMetadata`,
checks it against this server's front-end (``FeatureConfig()``) and labels, checks the tensor
names and shapes, runs one warm-up inference, and starts the model's micro-batcher. A file
that fails any step is skipped with a JSON log line saying why; the service is ready only when
at least one model (and the default one) loaded.

Models are keyed by their loss (``ce``, ``bce``, ``smoothl1``, ``l1``), which is what
``?model=`` names. Each model computes its features with ITS OWN FeatureConfig (the server's
transform plus that model's normalisation statistics).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from app.contract import INPUT_NAME, LOSSES, OUTPUT_NAME, ModelMetadata
from app.cuda import cuda_device
from app.engine import CudaOptions, MicroBatcher, run_session
from app.engine import open_session as open_ort_session
from app.features import FeatureConfig
from app.labels import LABELS, N_LABELS
from app.settings import Settings

log = logging.getLogger(__name__)
FALLBACK_DEFAULT = "ce"
# Where a model's validation score may sit in its metadata ``metrics``, best key first.
VALIDATION_KEYS: tuple[tuple[str, ...], ...] = (
    ("validation", "macro_f1"),
    ("val", "macro_f1"),
    ("val_macro_f1",),
    ("validation", "accuracy"),
    ("val", "accuracy"),
    ("val_accuracy",),
)


class ModelLoadError(RuntimeError):
    """A model file this server cannot serve; the message says why and what to do."""


MAX_ECHOED_NAME_CHARS = 64  # a client's model name is quoted back at most this long


class UnknownModelError(LookupError):
    """A model name that is not loaded; the message lists both names of each loaded model.

    Args:
        name: what the client asked for.
        available: the loaded models' keys (``ce``), as :attr:`ModelRegistry.names` orders them.
        full_names: their full names (``ser-ce``), in the same order.
    """

    def __init__(
        self, name: str, available: tuple[str, ...], full_names: tuple[str, ...] = ()
    ) -> None:
        forms = [
            key if full in ("", key) else f"{key} or {full}"
            for key, full in zip(available, full_names or available, strict=True)
        ]
        listed = "; ".join(forms) if forms else "none are loaded"
        shown = repr(name[:MAX_ECHOED_NAME_CHARS])
        if len(name) > MAX_ECHOED_NAME_CHARS:
            shown += f"... ({len(name)} characters)"
        super().__init__(
            f"unknown model {shown}: use one of the loaded models, by key or full name: {listed} "
            "(GET /v1/models describes them)"
        )
        self.name = name
        self.available = available
        self.full_names = full_names


@dataclass
class ServedModel:
    """One loaded model: its metadata, the provider it really runs on, and its batcher."""

    key: str
    path: Path
    metadata: ModelMetadata
    provider: str
    batcher: MicroBatcher = field(repr=False)
    load_ms: float = 0.0
    provider_options: dict[str, str] = field(default_factory=dict)
    device: dict[str, str] = field(default_factory=dict)  # on CUDA: app.cuda.cuda_device

    @property
    def feature_config(self) -> FeatureConfig:
        """The model's front-end: the server's transform with the model's statistics."""
        return self.metadata.feature_config

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Probabilities for normalised features. Blocks: call it from a worker thread (a
        work lane's or a stream's), never on the event loop.

        Args:
            features: float32 ``(n, n_mels, frames)`` from :func:`app.features.log_mel` with
                :attr:`feature_config`; rows are micro-batched with other callers' rows.

        Returns:
            float32 ``(n, 8)``, each row summing to 1 (see :func:`app.contract.probabilities`).
        """
        # One batch at a time: a long clip's batches take turns with other callers' rows
        # instead of queueing all at once ahead of them.
        logits = [self.batcher.run_rows(rows) for rows in self._batches(features)]
        return self.metadata.probabilities(np.concatenate(logits, axis=0))

    def _batches(self, features: np.ndarray) -> list[np.ndarray]:
        config = self.feature_config
        expected = (config.n_mels, config.window_frames)
        if features.ndim != 3 or features.shape[1:] != expected or features.shape[0] == 0:
            raise ValueError(
                f"features must be (n>=1, {expected[0]}, {expected[1]}), got {features.shape}"
            )
        size = self.batcher.max_batch_size
        return [features[i : i + size] for i in range(0, features.shape[0], size)]

    def close(self) -> None:
        self.batcher.close()


def _check_io(session: ort.InferenceSession, config: FeatureConfig) -> None:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in outputs] != [OUTPUT_NAME]:
        raise ModelLoadError(
            f"tensors are {[i.name for i in inputs]} -> {[o.name for o in outputs]}, expected "
            f"['{INPUT_NAME}'] -> ['{OUTPUT_NAME}']: re-export with `python -m training export`"
        )
    shape = list(inputs[0].shape)
    if shape[1:] != [config.n_mels, config.window_frames]:
        raise ModelLoadError(
            f"input shape {shape} does not take (batch, {config.n_mels}, {config.window_frames})"
        )


def _warm_up(session: ort.InferenceSession, config: FeatureConfig) -> None:
    logits = run_session(session, np.zeros((1, config.n_mels, config.window_frames), np.float32))
    if logits.shape != (1, N_LABELS) or not np.isfinite(logits).all():
        raise ModelLoadError(f"warm-up gave logits of shape {logits.shape}, or non-finite ones")


def load_model(path: Path, settings: Settings) -> ServedModel:
    """Open, check and warm up one model file.

    Raises:
        ModelLoadError: anything that makes the file unusable, with the reason.
    """
    started = time.perf_counter()
    try:
        session, provider = open_ort_session(
            path,
            settings.provider_preference,
            settings.intra_op_threads,
            settings.inter_op_threads,
            CudaOptions(settings.cuda_device_id, settings.cuda_mem_limit_bytes),
        )
        metadata = ModelMetadata.from_onnx_props(session.get_modelmeta().custom_metadata_map)
        metadata.check_compatible(FeatureConfig(), LABELS)
        _check_io(session, metadata.feature_config)
        _warm_up(session, metadata.feature_config)
    except ModelLoadError:
        raise
    except Exception as e:  # onnxruntime raises bare Exception subclasses for bad files
        raise ModelLoadError(f"{type(e).__name__}: {e}") from e
    batcher = MicroBatcher(
        functools.partial(run_session, session),
        metadata.loss,
        settings.max_batch_size,
        settings.batch_wait_s(provider),
        max_failures=settings.max_inference_failures,
        timeout_s=settings.inference_timeout_s,
    )
    if provider != "cpu":  # CUDA prepares per batch shape: not during the first requests
        config = metadata.feature_config
        batcher.warm_up(np.zeros((config.n_mels, config.window_frames), np.float32))
    load_ms = (time.perf_counter() - started) * 1000.0
    active = session.get_providers()[0]
    options = {str(k): str(v) for k, v in session.get_provider_options().get(active, {}).items()}
    device = cuda_device(settings.cuda_device_id) if provider == "cuda" else {}
    return ServedModel(metadata.loss, path, metadata, provider, batcher, load_ms, options, device)


def validation_score(metrics: Mapping[str, Any]) -> float | None:
    """The model's validation score from its metadata metrics (macro F1, else accuracy)."""
    for keys in VALIDATION_KEYS:
        value: Any = metrics
        for key in keys:
            value = value.get(key) if isinstance(value, Mapping) else None
        if isinstance(value, int | float):
            return float(value)
    return None


def training_corpora(metrics: Mapping[str, Any]) -> dict[str, int]:
    """The training clips per corpus from a model's metadata metrics (empty when it does not
    say: models exported before 2026-12-06)."""
    corpora = metrics.get("training_corpora")
    if not isinstance(corpora, Mapping):
        return {}
    return {str(k): int(v) for k, v in corpora.items() if isinstance(v, int)}


def choose_default(models: Mapping[str, ServedModel]) -> str | None:
    """The best model by validation score among those whose front-end has the level stage (all
    of them when none has) and, among those, that learnt from the most corpora; ``ce`` (else
    the first) when none has a score.

    More corpora come before a higher score because validation scores of different corpus
    selections are not comparable (a split with Amharic and Turkish clips is harder than one of
    three English studios), while more corpora is what carries to new voices (models/README.md).

    Level-stage models come first because the validation split cannot compare across the
    stage: its clips come from the training corpora's own studios, where loudness gives the
    label away, and a model that listens to loudness scores higher there while it changes its
    answer for half of the clips played 20 dB quieter (models/README.md, gain invariance).
    """
    ranked = sorted(
        (m.feature_config.level != "none", len(training_corpora(m.metadata.metrics)), s, k)
        for k, m in models.items()
        if (s := validation_score(m.metadata.metrics)) is not None
    )
    if ranked:
        return ranked[-1][-1]
    if FALLBACK_DEFAULT in models:
        return FALLBACK_DEFAULT
    return next(iter(models), None)


def _skip(skipped: dict[str, str], path: Path, reason: str) -> None:
    skipped[path.name] = reason
    log.warning(
        "model skipped", extra={"event": "model_skipped", "file": path.name, "reason": reason}
    )


class ModelsNotReady(RuntimeError):
    """The registry cannot serve (yet, or any more); the message says why."""

    def __init__(self, reason: str, skipped: dict[str, str]) -> None:
        super().__init__(reason)
        self.skipped = skipped


class ModelRegistry:
    """The loaded models, the files that were skipped, and whether the service is ready."""

    def __init__(
        self,
        models: dict[str, ServedModel],
        skipped: dict[str, str],
        default_name: str | None,
        reason: str | None = None,
    ) -> None:
        self.models = models
        self.skipped = skipped  # file name -> why it was skipped
        self.default_name = default_name
        self._load_reason = reason
        if reason is None and (default_name is None or default_name not in models):
            self._load_reason = "no usable model is loaded"

    @classmethod
    def empty(cls, reason: str) -> ModelRegistry:
        return cls({}, {}, None, reason)

    @property
    def not_ready_reason(self) -> str | None:
        """Why the service cannot serve: what loading found, or a model whose batches keep
        failing (a GPU fault: the replica should be taken out of rotation and restarted)."""
        return self._load_reason if self._load_reason is not None else self.broken_engine

    @property
    def broken_engine(self) -> str | None:
        """Why a loaded model's engine stopped working, if one has (app.engine)."""
        broken = [m.batcher.broken for m in self.models.values() if m.batcher.broken]
        return broken[0] if broken else None

    @property
    def ready(self) -> bool:
        return self.not_ready_reason is None

    def require_ready(self) -> None:
        """The one readiness rule, for /readyz, /predict, /v1/models and streams alike.

        Raises:
            ModelsNotReady: loading, shutting down, or no usable default model.
        """
        reason = self.not_ready_reason
        if reason is not None:
            raise ModelsNotReady(reason, dict(self.skipped))

    @property
    def names(self) -> tuple[str, ...]:
        """Loaded model keys, in the order of :data:`app.contract.LOSSES`."""
        return tuple(k for k in LOSSES if k in self.models)

    def get(self, name: str | None) -> ServedModel:
        """The model called ``name`` (its key or its full name, in any case), or the default
        one for None or an empty name (``?model=``).

        Raises:
            UnknownModelError: ``name`` is not loaded (or there is no default model).
        """
        key = self.default_name if not name else self._key_of(name)
        if key is None or key not in self.models:
            full_names = tuple(self.models[k].metadata.name for k in self.names)
            raise UnknownModelError("default" if key is None else key, self.names, full_names)
        return self.models[key]

    def _key_of(self, name: str) -> str:
        """The key of the model that ``name`` names: its key (``ce``) or its full name
        (``ser-ce``, as responses and ``/v1/models`` call it); ``name`` itself if neither."""
        folded = name.lower()
        if folded in self.models:
            return folded
        named = (k for k, m in self.models.items() if m.metadata.name.lower() == folded)
        return next(named, name)

    def close(self) -> None:
        for model in self.models.values():
            model.close()

    @classmethod
    def load(cls, settings: Settings) -> ModelRegistry:
        """Load every ``*.onnx`` in ``settings.models_dir`` (blocking: call it off the loop)."""
        folder = settings.models_dir
        if not folder.is_dir():
            reason = f"models folder {folder} does not exist: set SER_MODELS_DIR"
            log.error("not ready", extra={"event": "not_ready", "reason": reason})
            return cls.empty(reason)
        models: dict[str, ServedModel] = {}
        skipped: dict[str, str] = {}
        for path in sorted(folder.glob("*.onnx")):
            try:
                model = load_model(path, settings)
            except ModelLoadError as e:
                _skip(skipped, path, str(e))
                continue
            if model.key in models:
                model.close()
                _skip(
                    skipped,
                    path,
                    f"a second '{model.key}' model: {models[model.key].path.name} is served",
                )
                continue
            models[model.key] = model
            log.info(
                "model loaded",
                extra={
                    "event": "model_loaded",
                    "model": model.key,
                    "file": path.name,
                    "version": model.metadata.version,
                    "provider": model.provider,
                    **({"device": model.device} if model.device else {}),
                    "load_ms": round(model.load_ms, 1),
                },
            )
        return cls._assemble(models, skipped, settings)

    @classmethod
    def _assemble(
        cls, models: dict[str, ServedModel], skipped: dict[str, str], settings: Settings
    ) -> ModelRegistry:
        reason = None
        if not models:
            why = "; ".join(f"{f}: {r}" for f, r in skipped.items()) or "no *.onnx files"
            reason = f"no usable model in {settings.models_dir} ({why})"
        default = settings.default_model or choose_default(models)
        if models and default not in models:
            reason = (
                f"SER_DEFAULT_MODEL={default} is not loaded; loaded: {', '.join(sorted(models))}"
            )
        registry = cls(models, skipped, default, reason)
        if reason is not None:
            log.error("not ready", extra={"event": "not_ready", "reason": reason})
        return registry
