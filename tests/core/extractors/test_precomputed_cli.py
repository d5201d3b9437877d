"""The precomputed source (vocabulary lookup) and ``m3 extract``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from m3_core.cli.main import main
from m3_core.data import FeatureStore, load_dataset
from m3_core.errors import InvalidInputError, M3Error, MissingWeightsError
from m3_core.extractors import create_extractor, list_extractors
from m3_core.extractors.precomputed import open_precomputed


@pytest.fixture
def store(tmp_path) -> FeatureStore:
    s = FeatureStore(tmp_path, "seem")
    s.save("frame_000", np.random.default_rng(0).normal(size=(3, 4, 8)).astype(np.float16))
    emb = np.eye(3, 8, dtype=np.float32) * np.array([[2.0], [1.0], [0.5]], dtype=np.float32)
    s.save_vocabulary(["chair", "Red Mug", "plant"], emb)
    return s


def test_vocabulary_lookup(store, tmp_path):
    ext = create_extractor("precomputed", weights=store.dir)
    assert ext.name == "seem" and ext.dim == 8 and ext.has_text
    emb = ext.encode_text(["plant", "red mug", "Red Mug"])
    torch.testing.assert_close(emb, torch.eye(3, 8)[[2, 1, 1]])  # unit norm, case-insensitive
    with pytest.raises(InvalidInputError, match="not in the vocabulary of 'seem'.*'chair'"):
        ext.encode_text(["sofa"])
    with pytest.raises(M3Error, match="precomputed"):
        ext.encode_image(torch.rand(1, 3, 8, 8))
    assert open_precomputed(tmp_path, "seem").vocabulary() == ["chair", "Red Mug", "plant"]


def test_no_vocabulary_means_no_text(tmp_path):
    s = FeatureStore(tmp_path, "llama")
    s.save("a", np.zeros((2, 2, 4), np.float32))
    ext = open_precomputed(tmp_path, "llama")
    with pytest.raises(M3Error, match="no text encoder and no vocabulary.npz"):
        ext.encode_text(["chair"])
    with pytest.raises(MissingWeightsError):
        create_extractor("precomputed")
    with pytest.raises(MissingWeightsError):
        create_extractor("precomputed", weights=tmp_path / "features" / "nothing")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from m3_core.data import make_synthetic_scene

    d = tmp_path_factory.mktemp("scene") / "data"
    make_synthetic_scene(d, num_frames=3, width=64, height=48, feature_dim=4)
    return d


def test_batches_group_equal_sizes_only():
    from m3_core.extractors.extract import _batches

    sizes = [(48, 64), (48, 64), (48, 64), (32, 32), (48, 64)]
    assert _batches(sizes, [0, 1, 2, 3, 4], 2) == [[0, 1], [2], [3], [4]]
    assert _batches(sizes, [1, 4], 4) == [[1, 4]]


def test_extract_list(capsys):
    assert main(["extract", "--list"]) == 0
    assert capsys.readouterr().out.split() == list_extractors()


def test_extract_effnet_writes_the_precomputed_format_and_resumes(scene, capsys):
    args = ["extract", str(scene), "--model", "effnet", "--batch-size", "2", "--device", "cpu"]
    assert main(args) == 0
    ds = load_dataset(scene)
    store = FeatureStore(scene, "effnet")
    assert store.stems() == ds.names
    arr = np.load(store.path(ds.names[0]))
    assert arr.dtype == np.float16 and arr.shape == (7, 9, 1280)  # 48x64 -> 224x288 input
    meta = json.loads((store.dir / "meta.json").read_text())
    assert meta["model"] == "effnet" and meta["dim"] == 1280 and meta["stride"] == 32
    texts, emb = store.vocabulary()
    assert len(texts) == 1000 and emb.shape == (1000, 1280) and texts[967] == "espresso"
    # same numbers as calling the extractor directly (float16 rounding)
    direct = create_extractor("effnet").encode_image(ds.load_image(0).permute(2, 0, 1)[None])
    torch.testing.assert_close(
        torch.from_numpy(arr.astype(np.float32)), direct[0].permute(1, 2, 0), rtol=2e-3, atol=2e-3
    )
    # resumable: a missing frame is recomputed, the others are left alone
    store.path(ds.names[1]).unlink()
    mtime = store.path(ds.names[0]).stat().st_mtime_ns
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "wrote 1 maps" in out and "skipped 2 already done" in out
    assert store.exists(ds.names[1]) and store.path(ds.names[0]).stat().st_mtime_ns == mtime
    # other settings into the same folder are refused (no silent mix)
    assert main([*args, "--stride", "16"]) == 2
    assert "other settings" in capsys.readouterr().err
    assert store.path(ds.names[0]).stat().st_mtime_ns == mtime


def test_extract_clip_from_a_local_folder(scene, open_clip_dir):
    argv = ["extract", str(scene), "--model", "clip", "--weights", f"local-dir:{open_clip_dir}",
            "--name", "clip_tiny", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    store = FeatureStore(scene, "clip_tiny")
    assert np.load(store.path(store.stems()[0])).shape == (4, 5, 32)  # 48x64 -> 32x40 input
    assert store.vocabulary() is None and store.meta()["backend"] == "open_clip"


def test_extract_user_errors_exit_2(scene, capsys, no_weights_anywhere):
    assert main(["extract", str(scene), "--model", "nope"]) == 2
    assert "registered:" in capsys.readouterr().err
    assert main(["extract", str(scene), "--model", "clip"]) == 2
    assert "no weights for model 'clip'" in capsys.readouterr().err
    assert main(["extract", str(scene), "--model", "precomputed"]) == 2
    assert main(["extract", str(scene), "--model", "effnet", "--opt", "bad"]) == 2
    assert main(["extract", "--model", "effnet"]) == 2
