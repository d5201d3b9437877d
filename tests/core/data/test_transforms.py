"""nerfstudio transforms.json: writer -> reader round trips, resume, crash safety, bad input."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import m3_core.data.transforms as tf_mod
from m3_core.data import TransformsWriter, load_dataset
from m3_core.errors import InvalidInputError
from m3_core.types import Camera
from tests.core.data.conftest import random_c2w

W, H = 24, 16


def _camera(c2w: torch.Tensor, f: float = 20.0) -> Camera:
    return Camera(f, f * 1.1, W / 2 + 0.3, H / 2 - 0.2, W, H, c2w)


def _write(root: Path, n: int, seed: int = 0, depth: bool = True) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    writer = TransformsWriter(root)
    out = []
    for _ in range(n):
        rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        d = rng.uniform(0.1, 20.0, (H, W)) if depth else None
        cam = _camera(random_c2w(gen))
        frame = writer.add_frame(None, rgb, cam, d)
        out.append({"name": frame.name, "rgb": rgb, "depth": d, "camera": cam})
    return out


def test_round_trip_poses_images_depth(tmp_path: Path) -> None:
    written = _write(tmp_path, 3)
    ds = load_dataset(tmp_path)
    assert ds.source == "nerfstudio" and ds.names == [w["name"] for w in written]
    for i, w in enumerate(written):
        cam = ds.frames[i].camera
        torch.testing.assert_close(cam.c2w, w["camera"].c2w, atol=1e-6, rtol=0)
        assert (cam.fx, cam.fy, cam.cx, cam.cy) == pytest.approx(
            (w["camera"].fx, w["camera"].fy, w["camera"].cx, w["camera"].cy)
        )
        expected = torch.from_numpy(w["rgb"].astype(np.float32) / 255)
        torch.testing.assert_close(ds.load_image(i), expected, atol=0, rtol=0)
        depth = ds.load_depth(i)
        assert depth is not None and depth.dtype == torch.float32
        torch.testing.assert_close(
            depth, torch.from_numpy(w["depth"]).float(), atol=0.5e-3 + 1e-6, rtol=0
        )


def test_opengl_matrix_is_converted_to_opencv(tmp_path: Path) -> None:
    """A nerfstudio camera at the origin with identity pose looks down world -z (OpenGL)."""
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(tf_mod.encode_png(np.zeros((H, W, 3), np.uint8)))
    meta = {
        "fl_x": 10.0,
        "fl_y": 10.0,
        "cx": 12.0,
        "cy": 8.0,
        "w": W,
        "h": H,
        "frames": [{"file_path": "images/a.png", "transform_matrix": np.eye(4).tolist()}],
    }
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    cam = load_dataset(tmp_path).frames[0].camera
    torch.testing.assert_close(cam.c2w, torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0])))
    # the OpenCV optical axis (camera +z) points along world -z, image "down" along world -y
    torch.testing.assert_close(cam.c2w[:3, 2], torch.tensor([0.0, 0.0, -1.0]))
    torch.testing.assert_close(cam.c2w[:3, 1], torch.tensor([0.0, -1.0, 0.0]))


def test_resume_keeps_frames_and_new_names_do_not_collide(tmp_path: Path) -> None:
    first = _write(tmp_path, 2, seed=1)
    writer = TransformsWriter(tmp_path)
    assert len(writer) == 2 and [f.name for f in writer.frames] == [w["name"] for w in first]
    cam = _camera(random_c2w(torch.Generator().manual_seed(5)))
    new = writer.add_frame(None, np.zeros((H, W, 3), np.uint8), cam)
    assert new.name not in {w["name"] for w in first}
    assert all(w["name"] in writer for w in first) and new.name in writer
    assert "frame_999999" not in writer
    ds = load_dataset(tmp_path)
    assert len(ds) == 3 and ds.load_depth(ds.index_of(new.name)) is None
    torch.testing.assert_close(ds.frames[ds.index_of(new.name)].camera.c2w, cam.c2w)


def test_the_world_frame_is_kept_and_a_recording_never_mixes_frames(tmp_path: Path) -> None:
    cam = _camera(random_c2w(torch.Generator().manual_seed(2)))
    rgb = np.zeros((H, W, 3), np.uint8)
    writer = TransformsWriter(tmp_path)
    writer.add_frame(None, rgb, cam, world_frame="odom")
    writer.add_frame(None, rgb, cam)  # no frame given: joins as is
    before = (tmp_path / "transforms.json").read_bytes()
    with pytest.raises(InvalidInputError, match="recorded in frame 'odom'; a keyframe in 'map'"):
        TransformsWriter(tmp_path).add_frame(None, rgb, cam, world_frame="map")  # resumed
    assert (tmp_path / "transforms.json").read_bytes() == before
    assert not (tmp_path / "images" / "frame_000002.png").exists()
    ds = load_dataset(tmp_path)
    assert ds.world_frame == "odom" and len(ds) == 2
    _write(tmp_path / "plain", 1)
    assert load_dataset(tmp_path / "plain").world_frame == ""


def test_duplicate_name_and_bad_arrays_change_nothing(tmp_path: Path) -> None:
    written = _write(tmp_path, 1)
    before = (tmp_path / "transforms.json").read_bytes()
    files_before = sorted(p.name for p in tmp_path.rglob("*"))
    writer = TransformsWriter(tmp_path)
    cam = written[0]["camera"]
    ok_rgb = np.zeros((H, W, 3), np.uint8)
    bad_calls = [
        (written[0]["name"], ok_rgb, cam, None),  # duplicate name
        ("../evil", ok_rgb, cam, None),  # path in name
        ("x1", ok_rgb.astype(np.float32), cam, None),  # not uint8
        ("x2", np.zeros((H + 1, W, 3), np.uint8), cam, None),  # size != camera
        ("x3", ok_rgb, cam, np.zeros((H, W - 1))),  # depth size
        ("x4", ok_rgb, cam, -np.ones((H, W))),  # negative depth
    ]
    for args in bad_calls:
        with pytest.raises(InvalidInputError):
            writer.add_frame(*args)
    assert (tmp_path / "transforms.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.rglob("*")) == files_before


def test_nan_depth_is_stored_as_no_measurement(tmp_path: Path) -> None:
    writer = TransformsWriter(tmp_path)
    d = np.full((H, W), 2.0)
    d[0, 0], d[0, 1], d[0, 2] = np.nan, np.inf, 100.0
    writer.add_frame("a", np.zeros((H, W, 3), np.uint8), _camera(torch.eye(4)), d)
    depth = load_dataset(tmp_path).load_depth(0)
    assert depth[0, :3].tolist() == [0.0, 0.0, 0.0] and float(depth[0, 3]) == 2.0


def test_crash_between_files_leaves_a_valid_dataset(tmp_path: Path, monkeypatch) -> None:
    _write(tmp_path, 2)
    before = (tmp_path / "transforms.json").read_bytes()

    def crash(*_a, **_k):
        raise OSError("simulated power loss")

    monkeypatch.setattr(tf_mod, "atomic_write_text", crash)  # images written, json not
    writer = TransformsWriter(tmp_path)
    with pytest.raises(OSError):
        writer.add_frame("late", np.zeros((H, W, 3), np.uint8), _camera(torch.eye(4)))
    assert (tmp_path / "transforms.json").read_bytes() == before
    assert not list(tmp_path.rglob("*.tmp"))
    ds = load_dataset(tmp_path)
    assert len(ds) == 2 and "late" not in ds.names
    monkeypatch.undo()
    TransformsWriter(tmp_path).add_frame("late", np.zeros((H, W, 3), np.uint8), ds.cameras[0])
    assert "late" in load_dataset(tmp_path).names


def test_points_ply_round_trip(tmp_path: Path) -> None:
    _write(tmp_path, 1)
    xyz = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    rgb = np.random.default_rng(1).integers(0, 256, (50, 3), dtype=np.uint8)
    TransformsWriter(tmp_path).set_points(xyz, rgb)
    ds = load_dataset(tmp_path)
    torch.testing.assert_close(ds.points, torch.from_numpy(xyz))
    torch.testing.assert_close(ds.point_colors, torch.from_numpy(rgb.astype(np.float32) / 255))


def _edit(root: Path, fn) -> None:
    p = root / "transforms.json"
    meta = json.loads(p.read_text())
    fn(meta)
    p.write_text(json.dumps(meta))


def _nan_pose(m):
    m["frames"][0]["transform_matrix"][0][3] = float("nan")


def _scaled_pose(m):
    m["frames"][0]["transform_matrix"][0][0] *= 2.0


def _wrong_size(m):
    m["frames"][0]["w"] = W * 2


@pytest.mark.parametrize(
    ("breaker", "message"),
    [
        (_nan_pose, "NaN"),
        (_scaled_pose, "non-rigid"),
        (_wrong_size, "is 24x16 but the camera is 48x16"),
        (lambda m: m["frames"][0].pop("fl_x"), "fl_x"),
        (lambda m: m.update(camera_model="EQUIRECTANGULAR"), "not supported"),
        (lambda m: m["frames"][0].update(file_path="images/missing.png"), "not found"),
        (lambda m: m.update(frames=[]), "no frames"),
        (lambda m: m["frames"][0].update(depth_file_path="depth/none.png"), "not found"),
    ],
)
def test_bad_datasets_are_refused(tmp_path: Path, breaker, message: str) -> None:
    _write(tmp_path, 2)
    _edit(tmp_path, breaker)
    with pytest.raises(InvalidInputError, match=message):
        load_dataset(tmp_path)


def test_unreadable_image_and_invalid_json(tmp_path: Path) -> None:
    written = _write(tmp_path, 1)
    (tmp_path / "images" / f"{written[0]['name']}.png").write_bytes(b"not a png")
    with pytest.raises(InvalidInputError, match="cannot read image"):
        load_dataset(tmp_path)
    (tmp_path / "transforms.json").write_text("{ nope")
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        load_dataset(tmp_path)


def test_test_filenames(tmp_path: Path) -> None:
    written = _write(tmp_path, 3)
    _edit(tmp_path, lambda m: m.update(test_filenames=[f"images/{written[2]['name']}.png"]))
    ds = load_dataset(tmp_path)
    assert ds.test_indices == [2] and ds.train_indices == [0, 1]


@pytest.mark.parametrize(
    "model, coeffs, lens",
    [
        ("OPENCV", {"k1": -0.2, "k2": 0.04, "p1": 1e-3}, ("plumb_bob", (-0.2, 0.04, 1e-3, 0, 0))),
        ("OPENCV_FISHEYE", {"k1": 0.05, "k4": -0.01}, ("equidistant", (0.05, 0, 0, -0.01))),
    ],
)
def test_distorted_images_are_undistorted_on_loading(tmp_path: Path, model, coeffs, lens):
    """nerfstudio's distortion keys (ns-process-data writes them): frames get the pinhole
    camera of the undistorted image and load_image / load_depth undistort (Rectifier, tested
    against OpenCV's projection in test_undistort)."""
    from m3_core.data.undistort import LensModel, Rectifier

    written = _write(tmp_path, 2, seed=3)
    _edit(tmp_path, lambda m: m.update(camera_model=model, **coeffs))
    _edit(tmp_path, lambda m: m["frames"][1].update(k1=0.0, k2=0.0, p1=0.0, k4=0.0))  # pinhole
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = load_dataset(tmp_path)
    cam0 = written[0]["camera"]
    k = (cam0.fx, 0.0, cam0.cx, 0.0, cam0.fy, cam0.cy, 0.0, 0.0, 1.0)
    eye = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    want = LensModel(lens[0], tuple(map(float, lens[1])), k, eye, (0.0,) * 12, W, H)
    assert ds.frames[0].lens == want and ds.frames[1].lens is None
    assert list(ds.rectifiers.items) == [want]  # tables built once, while parsing
    rect = Rectifier(want)
    cam = ds.frames[0].camera
    assert (cam.fx, cam.fy, cam.cx, cam.cy) == pytest.approx(
        (rect.new_k[0, 0], rect.new_k[1, 1], rect.new_k[0, 2], rect.new_k[1, 2])
    )
    torch.testing.assert_close(cam.c2w, cam0.c2w)  # R = I: the pose is the raw camera's
    raw = torch.from_numpy(written[0]["rgb"].astype(np.float32) / 255).numpy()
    torch.testing.assert_close(ds.load_image(0), torch.from_numpy(rect.rgb(raw)))
    from m3_core.data.images import read_depth_file

    raw_depth = read_depth_file(ds.frames[0].depth_path, ds.depth_scale)
    torch.testing.assert_close(ds.load_depth(0), torch.from_numpy(rect.depth(raw_depth)))
    torch.testing.assert_close(ds.load_image(1), torch.from_numpy(written[1]["rgb"] / 255).float())


def test_blender_style_transforms(tmp_path: Path) -> None:
    """camera_angle_x, a file_path without extension and no w/h (read from the image)."""
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "r_0.png").write_bytes(tf_mod.encode_png(np.zeros((H, W, 3), np.uint8)))
    meta = {
        "camera_angle_x": 0.5,
        "frames": [{"file_path": "./train/r_0", "transform_matrix": np.eye(4).tolist()}],
    }
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    cam = load_dataset(tmp_path).frames[0].camera
    assert (cam.width, cam.height, cam.cx, cam.cy) == (W, H, W / 2, H / 2)
    assert cam.fx == pytest.approx(0.5 * W / np.tan(0.25)) and cam.fy == cam.fx
