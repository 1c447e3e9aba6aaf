"""Export a trained model to ONNX, with its metadata, after checking ONNX Runtime agrees.

The graph follows :mod:`app.contract`: input ``features`` float32 ``(batch, n_mels, frames)``,
output ``logits`` float32 ``(batch, n_labels)``; the batch axis is dynamic, the frame count is
the model's. The exporter is PyTorch's TorchScript-based one (``dynamo=False``): it handles
``nn.TransformerEncoder`` with a dynamic batch the same way on torch 2.11 and 2.13, and takes
about a second for this model.

Nothing is written unless ONNX Runtime (CPU) reproduces PyTorch's eval-mode logits within
``atol`` on the verification features.
"""

from __future__ import annotations

import contextlib
import copy
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from app.contract import INPUT_NAME, OUTPUT_NAME, ModelMetadata
from app.engine import open_session, run_session

OPSET = 17
TRACE_BATCH = 2  # not 1: a batch of one invites the tracer to specialise on it
N_RANDOM_VERIFY = 5


class ExportMismatchError(RuntimeError):
    """ONNX Runtime's output differs from PyTorch's by more than the tolerance."""


def _input_shape(model: nn.Module, metadata: ModelMetadata) -> tuple[int, int]:
    config = getattr(model, "config", None)
    n_mels = int(getattr(config, "n_mels", metadata.feature_config.n_mels))
    n_frames = int(getattr(config, "n_frames", metadata.feature_config.window_frames))
    return n_mels, n_frames


def onnx_logits(path: str | os.PathLike[str], features: np.ndarray) -> np.ndarray:
    """Logits of the ONNX model at ``path`` on CPU: (B, n_mels, frames) -> (B, n_labels)."""
    # The serving session factory, on the CPU, one thread: the parity check runs what is served.
    session, _ = open_session(Path(path), ("cpu",), intra_op_threads=1, inter_op_threads=1)
    return run_session(session, np.ascontiguousarray(features, np.float32))


@torch.no_grad()
def torch_logits(model: nn.Module, features: np.ndarray) -> np.ndarray:
    """Eval-mode PyTorch logits on CPU: (B, n_mels, frames) -> (B, n_labels)."""
    return model(torch.from_numpy(np.ascontiguousarray(features, np.float32))).numpy()


def _write_graph(model: nn.Module, shape: tuple[int, int], path: Path) -> None:
    example = torch.zeros(TRACE_BATCH, *shape)
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo; it is still the one that
        # exports this model reliably on every torch we run (2.11, 2.13).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            os.fspath(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )


def _attach_metadata(path: Path, metadata: ModelMetadata) -> None:
    proto = onnx.load(os.fspath(path))
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, metadata.to_onnx_props())
    proto.doc_string = f"{metadata.name} {metadata.version}: speech emotion logits"
    onnx.checker.check_model(proto)
    onnx.save(proto, os.fspath(path))


def export_onnx(
    model: nn.Module,
    metadata: ModelMetadata,
    path: str | os.PathLike[str],
    *,
    verify_features: np.ndarray | None = None,
    atol: float = 1e-4,
) -> float:
    """Export ``model`` to ``path`` and return the max |ONNX - PyTorch| logit difference.

    Args:
        model: a model from :func:`training.model.build_model` (any device; exported on CPU,
            in eval mode; the caller's model is left untouched).
        metadata: written into the file's ``metadata_props`` (see :mod:`app.contract`).
        path: the .onnx file to write; its folder is created.
        verify_features: float32 ``(B, n_mels, frames)`` to compare on, e.g. real test clips;
            random features (batch 1 and 5) when None.
        atol: the largest tolerated absolute difference.

    Raises:
        ExportMismatchError: ONNX Runtime disagrees with PyTorch; no file is left at ``path``.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    cpu_model = copy.deepcopy(model).to("cpu").float().eval()
    shape = _input_shape(cpu_model, metadata)
    if verify_features is None:
        rng = np.random.default_rng(0)
        batches = [rng.standard_normal((n, *shape), dtype=np.float32) for n in (1, N_RANDOM_VERIFY)]
    else:
        batches = [np.asarray(verify_features, dtype=np.float32)]
    fd, tmp_name = tempfile.mkstemp(suffix=".onnx.tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _write_graph(cpu_model, shape, tmp)
        _attach_metadata(tmp, metadata)
        max_diff = max(
            float(np.max(np.abs(onnx_logits(tmp, b) - torch_logits(cpu_model, b)))) for b in batches
        )
        sizes = ", ".join(str(len(b)) for b in batches)
        print(f"ONNX vs PyTorch on batch(es) of {sizes}: max abs logit difference {max_diff:.2e}")
        if not max_diff <= atol:  # also catches NaN
            raise ExportMismatchError(
                f"ONNX Runtime differs from PyTorch by {max_diff:.3e} > atol {atol:g}; "
                f"refusing to write {target}"
            )
        # mkstemp makes the file 0600; a released model must be readable by the serving user
        # (the container runs as a non-root uid and COPY keeps the mode).
        tmp.chmod(0o644)
        tmp.replace(target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return max_diff


def write_metadata(path: str | os.PathLike[str], metadata: ModelMetadata) -> None:
    """Replace the metadata of the exported model at ``path`` (the graph is unchanged); the
    file is replaced atomically, so a server reading it never sees half a model."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(target.read_bytes())
    try:
        _attach_metadata(tmp, metadata)
        tmp.chmod(target.stat().st_mode & 0o777)
        tmp.replace(target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def read_metadata(path: str | os.PathLike[str]) -> ModelMetadata:
    """The ModelMetadata stored in an exported model."""
    proto = onnx.load(os.fspath(path), load_external_data=False)
    return ModelMetadata.from_onnx_props({p.key: p.value for p in proto.metadata_props})
