"""``m3 synth OUT``: a synthetic room dataset that loads, matches its arguments, is fixed by
its seed byte for byte, trains with ``m3 train`` and exports with ``m3 export``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from plyfile import PlyData
from torch.testing import assert_close

from m3_core.cli.main import main
from m3_core.data import FeatureStore, load_dataset
from m3_core.data.synthetic import read_objects_json
from m3_core.data.synthetic_rooms import random_objects

W, H, FRAMES, OBJECTS = 48, 36, 6, 4
SMALL = ["--frames", str(FRAMES), "--size", str(W), str(H), "--objects", str(OBJECTS)]


def synth(capsys, out: Path, *more: str) -> dict:
    code = main(["synth", str(out), *SMALL, *more])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    return json.loads(stdout)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def room(tmp_path_factory) -> Path:
    """Seed 1, coarse features (the default), made once for the module."""
    out = tmp_path_factory.mktemp("synth") / "room"
    assert main(["synth", str(out), *SMALL, "--seed", "1"]) == 0
    return out


def test_dataset_matches_the_arguments(room):
    ds = load_dataset(room)
    assert len(ds.frames) == FRAMES
    assert {(f.camera.width, f.camera.height) for f in ds.frames} == {(W, H)}
    truth = read_objects_json(room)["objects"]
    want = random_objects(OBJECTS, 1)  # the library call m3 synth makes
    assert [o["label"] for o in truth] == [o.label for o in want]
    for got, o in zip(truth, want):  # JSON keeps float64 exactly
        assert_close(torch.tensor(got["center"]), torch.tensor(o.center), rtol=0, atol=0)
        assert_close(torch.tensor(got["size"]), torch.tensor(o.size), rtol=0, atol=0)
    store = FeatureStore(room, "labels")
    texts, emb = store.vocabulary()
    assert {o.label for o in want} <= set(texts) and emb.shape == (len(texts), 16)
    assert sorted(store.stems()) == sorted(f.name for f in ds.frames)
    assert tuple(store.load(ds.frames[0].name).shape) == (-(-H // 8), -(-W // 8), 16)  # 1/8 grid


def test_same_seed_same_bytes_other_seed_other_room(room, tmp_path, capsys):
    again = tmp_path / "again"
    summary = synth(capsys, again, "--seed", "1")
    assert summary["frames"] == FRAMES and summary["features"] == "labels"
    assert files(again) == files(room)
    other = tmp_path / "other"
    synth(capsys, other, "--seed", "2")
    a, b = read_objects_json(room)["objects"], read_objects_json(other)["objects"]
    assert [(o["label"], o["center"]) for o in a] != [(o["label"], o["center"]) for o in b]
    assert files(other)["images/frame_00000.png"] != files(room)["images/frame_00000.png"]


def test_exact_features_are_per_pixel(tmp_path, capsys):
    out = tmp_path / "exact"
    synth(capsys, out, "--features", "exact", "--frames", "1")
    grid = FeatureStore(out, "labels").load("frame_00000")
    assert tuple(grid.shape) == (H, W, 16)
    norms = grid.float().norm(dim=-1)  # unit label vectors, no noise (float16 storage)
    assert_close(norms, torch.ones_like(norms), rtol=0, atol=2e-3)


def test_trains_and_exports(room, tmp_path, capsys):
    mem = tmp_path / "mem"
    argv = ["train", str(room), "--out", str(mem), "--features", "labels"]
    assert main([*argv, "--iterations", "20", "--device", "cpu"]) == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["step"] == 20 and summary["num_gaussians"] > 0
    assert (mem / "features" / "labels" / "vocabulary.npz").is_file()
    ply = tmp_path / "mem.ply"
    assert main(["export", str(mem), "--ply", str(ply)]) == 0
    capsys.readouterr()
    assert len(PlyData.read(str(ply))["vertex"]) == summary["num_gaussians"]


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize(
    "more, needle",
    [
        (["--frames", "0"], "--frames"),
        (["--size", "4", "36"], "--size"),
        (["--size", "48", "100000"], "--size"),
        (["--objects", "0"], "number of objects"),
        (["--objects", "99"], "number of objects"),
        (["--features", "clip"], "--features must be exact or coarse"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(more, needle, tmp_path, capsys):
    before = tree(tmp_path)
    code = main(["synth", str(tmp_path / "out"), *SMALL, *more])
    out, err = capsys.readouterr()
    assert code == 2 and out == "", err
    assert len(err.strip().splitlines()) == 1 and err.startswith("m3 synth: error: "), err
    assert needle in err, err
    assert tree(tmp_path) == before  # nothing created


def test_bad_outputs_exit_2(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    for out, needle in [("file", "not a folder"), ("file/sub", "not a folder"), ("full", "empty")]:
        before = tree(tmp_path)
        assert main(["synth", str(tmp_path / out), *SMALL]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and needle in err, err
        assert tree(tmp_path) == before


def test_interrupted_run_leaves_nothing(tmp_path, capsys, monkeypatch):
    import m3_core.data.synthetic_rooms as rooms

    real = rooms.make_synthetic_scene

    def stop_after_two(*args, on_frame, **kwargs):
        def hook(done: int, total: int) -> None:
            on_frame(done, total)
            if done == 2:
                raise KeyboardInterrupt

        return real(*args, on_frame=hook, **kwargs)

    monkeypatch.setattr(rooms, "make_synthetic_scene", stop_after_two)
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "new" / "room", tmp_path / "empty"):
        assert main(["synth", str(out), *SMALL]) == 130
        capsys.readouterr()
        assert tree(tmp_path) == {"empty"}
