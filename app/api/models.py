"""``GET /v1/models``: what each loaded model is, how it scored, and where it runs."""

from __future__ import annotations

from typing import Any

import onnxruntime as ort
from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.api.deps import RegistryDep
from app.contract import ModelMetadata
from app.registry import ServedModel, training_corpora, validation_score

router = APIRouter(tags=["models"])


class BatchingInfo(BaseModel):
    mode: str = Field(
        description="off: each request's rows run on its own thread; greedy: one run at a time, "
        "a lone request at once, what queued meanwhile in the next run; window: the first "
        "request waits up to max_wait_ms for others",
        examples=["off"],
    )
    max_batch_size: int = Field(description="the most rows in one run", examples=[16])
    max_wait_ms: float | None = Field(description="window mode's wait; 0 greedy, null off")


class ModelInfo(BaseModel):
    key: str = Field(description="?model= takes this or the full name", examples=["ce"])
    name: str = Field(description="the full name, also accepted by ?model=", examples=["ser-ce"])
    loss: str
    architecture: str
    version: str
    default: bool
    provider: str = Field(description="the execution provider the session really runs on")
    provider_options: dict[str, str] = Field(
        description="that provider's options as ONNX Runtime reports them (on CUDA: device_id, "
        "cudnn_conv_algo_search, gpu_mem_limit, ...)"
    )
    device: dict[str, str] = Field(
        description="on CUDA: the GPU, its compute capability, the driver's CUDA version, the "
        "CUDA runtime's and cuDNN's (what could be read); empty on the CPU",
        examples=[{"gpu": "NVIDIA L4", "compute_capability": "8.9", "cudnn": "9.13.0"}],
    )
    batching: BatchingInfo = Field(description="how the model's runs take concurrent requests")
    labels: list[str]
    metrics: dict[str, Any] = Field(description="the metrics stored in the model's metadata")
    validation_score: float | None = Field(description="the score the default is chosen by")
    temperature: float = Field(
        description="calibration: probabilities are softmax(scores / temperature); 1 = none"
    )
    training_corpora: dict[str, int] = Field(
        description="the corpora the model learnt from, with the training clips of each; "
        "empty for a model whose metadata does not say",
        examples=[{"ravdess": 1154, "savee": 384, "tess": 2238}],
    )
    git_commit: str
    split_sha256: str
    file: str
    feature_config: dict[str, Any] = Field(
        description="the model's front-end (normalisation statistics left out)"
    )


class ModelList(BaseModel):
    default: str | None
    ready: bool
    onnxruntime: str = Field(
        description="the ONNX Runtime version and the providers its build has",
        examples=["1.31.1 (CUDAExecutionProvider, CPUExecutionProvider)"],
    )
    models: list[ModelInfo]
    skipped: dict[str, str] = Field(description="model files not served, and why")


def describe(model: ServedModel, default: bool) -> ModelInfo:
    meta = model.metadata
    return ModelInfo(
        key=model.key,
        name=meta.name,
        loss=meta.loss,
        architecture=meta.architecture,
        version=meta.version,
        default=default,
        provider=model.provider,
        provider_options=model.provider_options,
        device=model.device,
        batching=_batching(model),
        labels=list(meta.labels),
        metrics=meta.metrics,
        validation_score=validation_score(meta.metrics),
        temperature=meta.temperature,
        training_corpora=training_corpora(meta.metrics),
        git_commit=meta.git_commit,
        split_sha256=meta.split_sha256,
        file=model.path.name,
        feature_config=_front_end(meta),
    )


def _batching(model: ServedModel) -> BatchingInfo:
    wait_s = model.batcher.max_wait_s
    return BatchingInfo(
        mode=model.batcher.mode,
        max_batch_size=model.batcher.max_batch_size,
        max_wait_ms=None if wait_s is None else wait_s * 1000.0,
    )


def _front_end(meta: ModelMetadata) -> dict[str, Any]:
    """The FeatureConfig without its 2 x n_mels statistics, and whether it has them."""
    config = {k: v for k, v in meta.feature_config.to_dict().items() if k not in ("mean", "std")}
    return {**config, "normalised": meta.feature_config.normalised}


@router.get("/v1/models", response_model=ModelList)
async def list_models(registry: RegistryDep) -> ModelList:
    """The loaded models (with their metadata and active provider) and any skipped files."""
    return ModelList(
        default=registry.default_name,
        ready=registry.ready,
        onnxruntime=f"{ort.__version__} ({', '.join(ort.get_available_providers())})",
        models=[describe(registry.models[k], k == registry.default_name) for k in registry.names],
        skipped=registry.skipped,
    )
