"""The feature cache: a split's features are computed once per split, front-end, augmentation
and code, and a cached split is the split that was computed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from app.features import FeatureConfig
from tests.training.test_pipeline_end_to_end import WINDOW_S, _write_corpus
from training import featurecache
from training.config import TrainConfig
from training.corpora import corpus_root, load_corpus
from training.pipeline import Experiment, prepare_split, split_files

SHA = "0" * 64


def arrays(n: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "train_x": rng.normal(size=(3 * n, 4, 5)).astype(np.float16),
        "train_labels": np.arange(3 * n, dtype=np.int64) % 8,
        "train_source": np.arange(3 * n, dtype=np.int64) % n,
        "val_x": rng.normal(size=(2, 4, 5)).astype(np.float32),
        "test_x": rng.normal(size=(2, 4, 5)).astype(np.float32),
        "mean": np.zeros(4),
        "std": np.ones(4),
    }


def test_the_key_follows_everything_the_features_depend_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = featurecache.entry_key(SHA, FeatureConfig(), TrainConfig())
    assert base == featurecache.entry_key(SHA, FeatureConfig(), TrainConfig(epochs=3, loss="l1"))
    assert base == featurecache.entry_key(  # the statistics are an output, not an input
        SHA, FeatureConfig().with_stats(np.zeros(128), np.ones(128)), TrainConfig()
    )
    changed = [
        featurecache.entry_key("1" * 64, FeatureConfig(), TrainConfig()),
        featurecache.entry_key(SHA, FeatureConfig(level="window"), TrainConfig()),
        featurecache.entry_key(SHA, FeatureConfig(), TrainConfig(seed=7)),
        featurecache.entry_key(SHA, FeatureConfig(), TrainConfig(snr_db=(10.0, 30.0))),
        featurecache.entry_key(SHA, FeatureConfig(), TrainConfig(channel_augment=("eq",))),
    ]
    assert len({base, *changed}) == 1 + len(changed)
    # An edit to the code that computes them is a new entry too.
    code = tmp_path / "training" / "augment.py"
    code.parent.mkdir()
    code.write_text("# one version\n")
    monkeypatch.setattr(featurecache, "ROOT", tmp_path)
    before = featurecache.entry_key(SHA, FeatureConfig(), TrainConfig())
    code.write_text("# another\n")
    assert featurecache.entry_key(SHA, FeatureConfig(), TrainConfig()) != before


def test_an_entry_is_written_whole_and_read_back_equal(tmp_path: Path) -> None:
    entry = tmp_path / "features" / "abc"
    assert featurecache.load(entry) is None
    assert featurecache.save(entry, arrays()) is None
    loaded = featurecache.load(entry)
    assert loaded is not None
    for name, array in arrays().items():
        assert loaded[name].dtype == array.dtype and np.array_equal(loaded[name], array)
    assert [p.name for p in entry.parent.iterdir()] == ["abc"]  # no staging folder left
    # Another run that wrote the same entry first: this one keeps it and says nothing.
    assert featurecache.save(entry, arrays()) is None
    (entry / "test_x.npy").unlink()  # an entry missing an array is no entry
    assert featurecache.load(entry) is None


def test_an_entry_that_cannot_be_written_is_reported_not_raised(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    why = featurecache.save(blocked / "abc", arrays())
    assert why is not None and "Error" in why


def test_a_cached_split_is_the_split_that_was_computed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = _write_corpus(tmp_path / "corpus")
    exp = Experiment(
        data=corpus,
        out=tmp_path / "models",
        runs=tmp_path / "runs",
        losses=("ce",),
        train=TrainConfig(epochs=1, workers=1, device="cpu"),
        features=FeatureConfig(window_s=WINDOW_S, level="window"),
        cache_dir=tmp_path / "segments",
        feature_cache=tmp_path / "features",
    )
    root = corpus_root(corpus)
    ((name, fold, path),) = split_files(exp, load_corpus(corpus), root)
    computed = prepare_split(exp, root, name, fold, path)
    assert "features from" not in capsys.readouterr().out
    (entry,) = (tmp_path / "features").iterdir()
    cached = prepare_split(exp, root, name, fold, path)
    assert f"features from {entry}" in capsys.readouterr().out
    assert cached.feature_config == computed.feature_config
    for part in ("train", "val", "test"):
        a, b = getattr(computed, part), getattr(cached, part)
        assert a.features.dtype == b.features.dtype and np.array_equal(a.features, b.features)
        assert np.array_equal(a.labels, b.labels) and a.versions == b.versions
    assert np.array_equal(computed.train.groups, cached.train.groups)
    assert np.array_equal(computed.train.speakers, cached.train.speakers)
    assert computed.corpora.keys() == cached.corpora.keys()
    # Another augmentation is another entry; no cache, nothing written.
    noisier = dataclasses.replace(exp, train=dataclasses.replace(exp.train, snr_db=(5.0, 10.0)))
    prepare_split(noisier, root, name, fold, path)
    assert len(list((tmp_path / "features").iterdir())) == 2
    prepare_split(dataclasses.replace(exp, feature_cache=None), root, name, fold, path)
    assert len(list((tmp_path / "features").iterdir())) == 2
