"""COLMAP models written with pycolmap (text and binary) read into a SceneDataset."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from m3_core.data import load_dataset
from m3_core.data.images import encode_png
from m3_core.errors import InvalidInputError
from tests.core.data.conftest import random_c2w

pycolmap = pytest.importorskip("pycolmap")

W, H = 32, 24


def _write_model(
    root: Path, model: str = "PINHOLE", binary: bool = True, n: int = 3, distortion=()
):
    """A tiny reconstruction; returns the world-to-camera matrices [n, 4, 4] float64."""
    rec = pycolmap.Reconstruction()
    cam = pycolmap.Camera.create_from_model_name(1, model, 30.0, W, H)
    if distortion:
        params = list(cam.params)
        params[len(params) - len(distortion) :] = distortion
        cam.params = params
    rec.add_camera_with_trivial_rig(cam)
    gen = torch.Generator().manual_seed(3)
    w2cs = []
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        w2c = torch.linalg.inv(random_c2w(gen).double())
        w2cs.append(w2c)
        name = f"img_{(n - i):02d}.png"  # ids in reverse name order: the reader sorts by name
        img = pycolmap.Image(name=name, camera_id=1, image_id=i + 1)
        rec.add_image_with_trivial_frame(img, pycolmap.Rigid3d(w2c[:3, :].numpy()))
        (root / "images" / name).write_bytes(encode_png(np.full((H, W, 3), i, np.uint8)))
    rng = np.random.default_rng(0)
    xyz, rgb = rng.normal(size=(10, 3)), rng.integers(0, 256, (10, 3)).astype(np.uint8)
    for p, c in zip(xyz, rgb):
        rec.add_point3D(p, pycolmap.Track(), c)
    model_dir = root / "sparse" / "0"
    model_dir.mkdir(parents=True)
    (rec.write_binary if binary else rec.write_text)(str(model_dir))
    return torch.stack(w2cs), xyz, rgb


@pytest.mark.parametrize("binary", [True, False])
def test_colmap_model_poses_intrinsics_points(tmp_path: Path, binary: bool) -> None:
    w2cs, xyz, rgb = _write_model(tmp_path, binary=binary)
    ds = load_dataset(tmp_path)
    assert ds.source == "colmap" and ds.names == ["img_01", "img_02", "img_03"]
    for k, frame in enumerate(ds.frames):
        image_id = 3 - k  # img_01 is the last one written
        expected_c2w = torch.linalg.inv(w2cs[image_id - 1]).float()
        torch.testing.assert_close(frame.camera.c2w, expected_c2w, atol=1e-5, rtol=0)
        cam = frame.camera
        assert (cam.fx, cam.fy, cam.cx, cam.cy, cam.width) == (30.0, 30.0, W / 2, H / 2, W)
        assert float(ds.load_image(k)[0, 0, 0]) == pytest.approx((image_id - 1) / 255)
    assert ds.test_indices == [0]
    order = np.argsort(ds.points[:, 0].numpy())
    ref = np.argsort(xyz[:, 0])
    np.testing.assert_allclose(ds.points.numpy()[order], xyz[ref], atol=1e-6)
    np.testing.assert_allclose(ds.point_colors.numpy()[order] * 255, rgb[ref], atol=1e-3)


@pytest.mark.parametrize(
    "model, distortion, lens",
    [
        ("SIMPLE_RADIAL", (-0.1,), ("plumb_bob", (-0.1, 0, 0, 0, 0))),
        ("RADIAL", (-0.1, 0.02), ("plumb_bob", (-0.1, 0.02, 0, 0, 0))),
        ("OPENCV", (-0.1, 0.02, 1e-3, 0), ("plumb_bob", (-0.1, 0.02, 1e-3, 0, 0))),
        ("OPENCV_FISHEYE", (0.05, 0, 0, -0.01), ("equidistant", (0.05, 0, 0, -0.01))),
    ],
)
def test_distorted_cameras_are_undistorted_on_loading(tmp_path, model, distortion, lens):
    from m3_core.data.undistort import LensModel, Rectifier

    _write_model(tmp_path, model=model, distortion=distortion)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = load_dataset(tmp_path)
    k = (30.0, 0.0, W / 2, 0.0, 30.0, H / 2, 0.0, 0.0, 1.0)
    want = LensModel(
        lens[0], tuple(map(float, lens[1])), k, (1, 0, 0, 0, 1, 0, 0, 0, 1), (0,) * 12, W, H
    )
    assert ds.frames[0].lens == want
    assert list(ds.rectifiers.items) == [want]  # tables built once, while reading
    rect = Rectifier(want)
    cam = ds.frames[0].camera
    assert (cam.fx, cam.cy) == pytest.approx((rect.new_k[0, 0], rect.new_k[1, 2]))
    raw = np.full((H, W, 3), 2 / 255, np.float32)  # img_01.png: image id 3 -> value 2
    torch.testing.assert_close(ds.load_image(0), torch.from_numpy(rect.rgb(raw)))


def test_zero_distortion_is_pinhole_and_other_models_are_refused(tmp_path: Path) -> None:
    _write_model(tmp_path / "a", model="SIMPLE_RADIAL")  # k = 0
    _write_model(tmp_path / "b", model="SIMPLE_PINHOLE")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for sub in ("a", "b"):
            ds = load_dataset(tmp_path / sub)
            assert ds.frames[0].lens is None and ds.frames[0].camera.fx == 30.0
    _write_model(tmp_path / "c", model="THIN_PRISM_FISHEYE")
    with pytest.raises(InvalidInputError, match="not supported"):
        load_dataset(tmp_path / "c")


def test_missing_image_is_refused(tmp_path: Path) -> None:
    _write_model(tmp_path)
    (tmp_path / "images" / "img_02.png").unlink()
    with pytest.raises(InvalidInputError, match="not found"):
        load_dataset(tmp_path)
