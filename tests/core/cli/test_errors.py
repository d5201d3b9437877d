"""Bad input to ``m3``: exit status 2, one readable line on stderr, nothing left behind.

Each case of issue 16 item 5 (and a few neighbours): the command is run in-process through
``m3_core.cli.main.main``, so a traceback would fail the test; the folder the test works in
must hold exactly the same paths afterwards (no empty output folder, no temp file).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from m3_core.cli.main import main
from m3_core.data.images import encode_png

POSE = ["--pose", "0 0 0 0 0 0 1"]


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def assert_fails_cleanly(capsys, root: Path, argv: list[str], needle: str) -> str:
    """Run ``m3 argv``; exit 2, stdout empty, stderr one line naming the problem, and no path
    under ``root`` created or removed."""
    before = tree(root)
    code = main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"m3 {argv[0]}: error: "), lines[0]
    assert needle in lines[0], lines[0]
    assert out == ""
    assert tree(root) == before
    return lines[0]


def edit_transforms(data: Path, fn) -> None:
    p = data / "transforms.json"
    meta = json.loads(p.read_text())
    fn(meta)
    p.write_text(json.dumps(meta))


def train_args(data: Path, out: Path, *more: str) -> list[str]:
    """A 2-step CPU run (should a refusal regress, the test stays short)."""
    short = ["--preset", "small", "--iterations", "2", "--device", "cpu"]
    return ["train", str(data), "--out", str(out), "--features", "labels", *short, *more]


# -- camera numbers on the command line -----------------------------------------------------
@pytest.mark.parametrize(
    "intrinsics, needle",
    [
        ("nan 50 24 18 48 36", "fx must be finite"),
        ("50 50 24 18 inf 36", "width"),
        ("50 50 24 18 48 nan", "height"),
        ("50 50 24 18 0 36", "width"),
        ("50 50 24 18 48.5 36", "whole number"),
        ("50 50 24 18 48", "6 numbers"),
    ],
)
@pytest.mark.parametrize("verb", ["render", "query"])
def test_bad_intrinsics(verb, intrinsics, needle, memory_dir, tmp_path, capsys):
    out = tmp_path / ("x.npz" if verb == "render" else "x.png")
    text = ["chair"] if verb == "query" else []
    argv = [verb, str(memory_dir), *text, *POSE, "--intrinsics", intrinsics, "--out", str(out)]
    assert_fails_cleanly(capsys, tmp_path, argv, needle)


# -- datasets -------------------------------------------------------------------------------
DATASET_CASES = {
    "frame w NaN": (lambda m: m["frames"][0].update(w=float("nan")), "'w' must be"),
    "frame h inf": (lambda m: m["frames"][0].update(h=float("inf")), "'h' must be"),
    "frame w fraction": (lambda m: m["frames"][0].update(w=47.5), "'w' must be"),
    "depth scale mm": (lambda m: m.update(depth_unit_scale_factor="mm"), "depth_unit_scale"),
    "depth scale NaN": (
        lambda m: m.update(depth_unit_scale_factor=float("nan")),
        "depth_unit_scale",
    ),
    "depth scale negative": (lambda m: m.update(depth_unit_scale_factor=-1), "depth_unit_scale"),
    "test_filenames 5": (lambda m: m.update(test_filenames=5), "test_filenames"),
    "test_filenames numbers": (lambda m: m.update(test_filenames=[5]), "test_filenames"),
    "world_frame list": (lambda m: m.update(world_frame=["odom"]), "world_frame"),
    "ply path number": (lambda m: m.update(ply_file_path=7), "ply_file_path"),
}


@pytest.mark.parametrize("case", sorted(DATASET_CASES))
def test_bad_transforms_json(case, scene_copy, tmp_path, capsys):
    fn, needle = DATASET_CASES[case]
    edit_transforms(scene_copy, fn)
    assert_fails_cleanly(capsys, tmp_path, train_args(scene_copy, tmp_path / "mem"), needle)


def test_ply_that_is_not_a_ply(scene_copy, tmp_path, capsys):
    (scene_copy / "sparse_pc.ply").write_text("hello\n")
    argv = train_args(scene_copy, tmp_path / "mem")
    assert_fails_cleanly(capsys, tmp_path, argv, "sparse_pc.ply")


@pytest.mark.parametrize("extra_columns", [-1, 1])
def test_image_one_pixel_off_is_refused(extra_columns, scene_copy, tmp_path, capsys):
    import cv2

    p = scene_copy / "images" / "frame_00003.png"
    img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    img = img[:, :-1] if extra_columns < 0 else np.concatenate([img, img[:, -1:]], axis=1)
    cv2.imwrite(str(p), img)  # 47x36 or 49x36, the camera says 48x36
    line = assert_fails_cleanly(
        capsys, tmp_path, train_args(scene_copy, tmp_path / "mem"), "frame_00003.png"
    )
    assert f"{48 + extra_columns}x36" in line and "48x36" in line


def test_depth_one_pixel_off_is_refused(scene_copy, tmp_path, capsys):
    import cv2

    p = scene_copy / "depth" / "frame_00002.png"
    d = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    p.write_bytes(encode_png(np.ascontiguousarray(d[:-1])))  # 48x35
    line = assert_fails_cleanly(
        capsys, tmp_path, train_args(scene_copy, tmp_path / "mem"), "frame_00002.png"
    )
    assert "48x35" in line


def test_depth_npy_one_pixel_off_is_refused(scene_copy, tmp_path, capsys):
    np.save(scene_copy / "depth" / "odd.npy", np.ones((36, 49), np.float32))
    edit_transforms(scene_copy, lambda m: m["frames"][1].update(depth_file_path="depth/odd.npy"))
    line = assert_fails_cleanly(
        capsys, tmp_path, train_args(scene_copy, tmp_path / "mem"), "odd.npy"
    )
    assert "49x36" in line


# -- train options and the output folder ----------------------------------------------------
@pytest.mark.parametrize(
    "spec, needle",
    [("labels:8:7", "threshold"), ("labels:0", "channels"), ("labels:8:0", "threshold")],
)
def test_bad_feature_spec_leaves_no_folder(spec, needle, scene_dir, tmp_path, capsys):
    argv = [*train_args(scene_dir, tmp_path / "mem"), "--features", spec]
    assert_fails_cleanly(capsys, tmp_path, argv, needle)


def test_out_is_an_existing_file(scene_dir, tmp_path, capsys):
    (tmp_path / "taken").write_text("mine")
    argv = train_args(scene_dir, tmp_path / "taken")
    assert_fails_cleanly(capsys, tmp_path, argv, "not a folder")
    assert (tmp_path / "taken").read_text() == "mine"


def test_out_below_a_file(scene_dir, tmp_path, capsys):
    (tmp_path / "taken").write_text("mine")
    argv = train_args(scene_dir, tmp_path / "taken" / "mem")
    assert_fails_cleanly(capsys, tmp_path, argv, "taken")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_in_a_read_only_folder(scene_dir, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    assert_fails_cleanly(capsys, tmp_path, train_args(scene_dir, ro / "mem"), "not writable")


def test_train_error_after_mkdir_removes_the_new_folder(scene_dir, tmp_path, capsys, monkeypatch):
    import m3_core.train.trainer
    from m3_core.errors import InvalidInputError

    def fail(*args, **kwargs):  # an error found late, after the output folder was made
        raise InvalidInputError("PSC failed")

    monkeypatch.setattr(m3_core.train.trainer, "build_bank", fail)
    before = tree(tmp_path)
    assert main(train_args(scene_dir, tmp_path / "mem")) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "m3 train: error: PSC failed"
    assert tree(tmp_path) == before


@pytest.mark.parametrize("verb", ["render", "query"])
def test_out_file_is_a_folder(verb, memory_dir, scene_dir, tmp_path, capsys):
    text = ["chair"] if verb == "query" else []
    out = tmp_path / ("view.npz" if verb == "render" else "view.png")
    out.mkdir()
    argv = [verb, str(memory_dir), *text, "--frame", "1", "--data", str(scene_dir)]
    assert_fails_cleanly(capsys, tmp_path, [*argv, "--out", str(out)], "is a folder")


@pytest.mark.parametrize("verb", ["render", "query"])
def test_full_disk_is_one_line(verb, memory_dir, scene_dir, tmp_path, capsys, monkeypatch):
    import m3_core.io

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(m3_core.io.os, "fsync", no_space)
    text = ["chair"] if verb == "query" else []
    out = tmp_path / ("view.npz" if verb == "render" else "view.png")
    argv = [verb, str(memory_dir), *text, "--frame", "1", "--data", str(scene_dir)]
    assert_fails_cleanly(capsys, tmp_path, [*argv, "--out", str(out)], "No space left")


def test_full_disk_while_training(scene_dir, tmp_path, capsys, monkeypatch):
    import m3_core.io

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(m3_core.io.os, "fsync", no_space)
    argv = train_args(scene_dir, tmp_path / "mem")
    before = tree(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("m3 train: error: No space left on device")
    assert tree(tmp_path) == before  # the new folder held no memory: removed


# -- memories -------------------------------------------------------------------------------
def edit_memory_json(mem: Path, fn, *, restamp: bool) -> None:
    """Edit memory.json; ``restamp`` makes its checksum agree (a file written wrongly by some
    other tool, to reach the type checks behind the checksum)."""
    from m3_core.memory.io import meta_digest

    p = mem / "memory.json"
    meta = json.loads(p.read_text())
    fn(meta)
    if restamp:
        meta["meta_sha256"] = meta_digest(meta)
    p.write_text(json.dumps(meta))


MEMORY_CASES = {
    "sh_degree string": (lambda m: m["config"].update(sh_degree="3"), "sh_degree"),
    "sh_degree bool": (lambda m: m["config"].update(sh_degree=True), "sh_degree"),
    "tau string": (lambda m: m["config"].update(gma_temperature="0.05"), "gma_temperature"),
    "projection int": (lambda m: m["config"].update(train_projection=1), "train_projection"),
    "models object": (lambda m: m["config"].update(models={"a": 1}), "models"),
    "model dim string": (lambda m: m["config"]["models"][0].update(dim="8"), "dim"),
    "model name number": (lambda m: m["config"]["models"][0].update(name=5), "name"),
}


@pytest.mark.parametrize("case", sorted(MEMORY_CASES))
def test_memory_json_with_wrong_types(case, memory_copy, tmp_path, capsys):
    fn, needle = MEMORY_CASES[case]
    edit_memory_json(memory_copy, fn, restamp=True)
    assert_fails_cleanly(capsys, tmp_path, ["info", str(memory_copy)], needle)


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m["config"].update(gma_temperature=0.5),
        lambda m: m["extra"].update(world_frame="map"),
        lambda m: m["config"]["models"][0].update(psc_threshold=0.5),
    ],
)
def test_edited_memory_json_is_detected(edit, memory_copy, tmp_path, capsys):
    edit_memory_json(memory_copy, edit, restamp=False)
    assert_fails_cleanly(capsys, tmp_path, ["info", str(memory_copy)], "checksum")


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_corrupt_vocabulary(how, memory_copy, tmp_path, capsys):
    p = memory_copy / "features" / "labels" / "vocabulary.npz"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2] if how == "truncated" else b"PK\x03\x04" + b"x" * 64)
    argv = ["ground", str(memory_copy), "chair"]
    assert_fails_cleanly(capsys, tmp_path, argv, "vocabulary.npz")


def test_long_query_is_not_echoed_whole(memory_dir, tmp_path, capsys):
    text = "x" * 100_000
    line = assert_fails_cleanly(capsys, tmp_path, ["ground", str(memory_dir), text], "labels")
    assert len(line) < 1000 and "characters" in line


def test_shorten_keeps_both_ends():
    from m3_core.cli.main import shorten

    s = shorten("a" + "y" * 100_000 + "z")
    assert len(s) <= 440 and s.startswith("ayy") and s.endswith("yyz") and " characters]" in s
    kept = len(s) - len(s[s.index("...[") : s.index("]...") + 4])
    assert f"[{100_002 - kept:,} characters]" in s
    assert shorten("short") == "short"
    assert shorten("two\nlines") == "two lines"


# -- output pipes ---------------------------------------------------------------------------
def test_closed_pipe_is_quiet(memory_dir):
    proc = subprocess.Popen(
        [sys.executable, "-m", "m3_core.cli.main", "info", str(memory_dir), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # like `m3 info MEM | head -0`: the reader is gone before the write
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err  # 128 + SIGPIPE, as a shell reports it
    assert err == ""
