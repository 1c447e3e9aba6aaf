"""ONNX export: the contract's names, a dynamic batch, metadata, and the refusal to mismatch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import training.export as export_module
from app.contract import INPUT_NAME, OUTPUT_NAME, ModelMetadata
from app.features import FeatureConfig
from app.labels import LABELS
from training.export import ExportMismatchError, export_onnx, onnx_logits, read_metadata
from training.model import Architecture, InputNorm, ModelConfig, build_model


def _metadata(architecture: str = "sequential") -> ModelMetadata:
    config = FeatureConfig().with_stats(np.linspace(-8, -2, 128), np.linspace(1, 3, 128))
    return ModelMetadata(
        name="ser-bce",
        loss="bce",
        architecture=architecture,
        version="0.0.1-test",
        labels=LABELS,
        feature_config=config,
        git_commit="abc123",
        split_sha256="f" * 64,
        metrics={"test": {"accuracy": 0.5, "macro_f1": 0.25}},
    )


def _trained_looking_model(
    architecture: Architecture, input_norm: InputNorm = "global"
) -> torch.nn.Module:
    # Non-trivial BatchNorm statistics, so eval mode differs from train mode in the graph.
    torch.manual_seed(3)
    model = build_model(ModelConfig(architecture=architecture, input_norm=input_norm))
    with torch.no_grad():
        model.train()
        model(torch.randn(6, 128, 348) * 2 + 1)
    return model.eval()


@pytest.mark.parametrize(
    ("architecture", "input_norm"),
    [("sequential", "global"), ("parallel", "global"), ("sequential", "instance")],
)
def test_onnx_matches_pytorch_for_batch_1_and_5(
    tmp_path: Path, architecture: Architecture, input_norm: InputNorm
) -> None:
    model = _trained_looking_model(architecture, input_norm)
    path = tmp_path / "model.onnx"
    max_diff = export_onnx(model, _metadata(architecture), path)
    assert max_diff < 1e-4
    rng = np.random.default_rng(7)
    for batch in (1, 5):
        x = rng.standard_normal((batch, 128, 348), dtype=np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        got = onnx_logits(path, x)
        assert got.shape == (batch, 8)
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_graph_follows_the_contract(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    export_onnx(build_model(), _metadata(), path)
    proto = onnx.load(path)
    (graph_input,) = proto.graph.input
    (graph_output,) = proto.graph.output
    assert graph_input.name == INPUT_NAME and graph_output.name == OUTPUT_NAME
    dims = graph_input.type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].HasField("dim_value")  # dynamic batch
    assert [d.dim_value for d in dims[1:]] == [128, 348]  # fixed mels and frames
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    # Readable by other users: the container serves it as a non-root uid.
    assert path.stat().st_mode & 0o777 == 0o644


def test_metadata_round_trips_through_the_file(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    metadata = _metadata("parallel")
    export_onnx(_trained_looking_model("parallel"), metadata, path)
    assert read_metadata(path) == metadata
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    props = session.get_modelmeta().custom_metadata_map
    assert ModelMetadata.from_onnx_props(props) == metadata


def test_export_refuses_a_model_that_disagrees(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = export_module.onnx_logits
    monkeypatch.setattr(export_module, "onnx_logits", lambda p, f: real(p, f) + 1e-3)
    path = tmp_path / "out" / "model.onnx"
    with pytest.raises(ExportMismatchError, match="refusing to write"):
        export_onnx(build_model(), _metadata(), path)
    assert list(path.parent.iterdir()) == []  # neither the model nor a temporary file


def test_export_does_not_replace_a_good_file_with_a_bad_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "model.onnx"
    export_onnx(build_model(), _metadata(), path)
    before = path.read_bytes()
    monkeypatch.setattr(export_module, "onnx_logits", lambda p, f: np.full((len(f), 8), np.nan))
    with pytest.raises(ExportMismatchError):
        export_onnx(build_model(ModelConfig(dropout=0.3)), _metadata(), path)
    assert path.read_bytes() == before


def test_export_checks_the_given_features_and_leaves_the_model_in_train_mode(
    tmp_path: Path,
) -> None:
    model = build_model().train()
    features = np.random.default_rng(0).standard_normal((3, 128, 348), dtype=np.float32)
    assert export_onnx(model, _metadata(), tmp_path / "m.onnx", verify_features=features) < 1e-4
    assert model.training
