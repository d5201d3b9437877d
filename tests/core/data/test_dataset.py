"""SceneDataset: format detection, downscaling to max_size, bounds, bad folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from m3_core.data import SceneDataset, TransformsWriter, load_dataset
from m3_core.data.images import encode_png
from m3_core.errors import InvalidInputError
from m3_core.types import Camera
from tests.core.data.conftest import yaw_c2w

W, H = 40, 30


def _dataset(root: Path, n: int = 2) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    writer = TransformsWriter(root)
    rgbs = []
    for i in range(n):
        rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        depth = np.full((H, W), 1.0 + i)
        depth[: H // 2] = 3.0  # a depth edge, kept sharp by nearest-neighbour downscaling
        cam = Camera(30.0, 30.0, 20.0, 15.0, W, H, yaw_c2w(i * 1.0, 0.0, 0.5, 0.0))
        writer.add_frame(None, rgb, cam, depth)
        rgbs.append(rgb)
    return rgbs


def test_downscale_to_max_size_scales_intrinsics_and_area_averages(tmp_path: Path) -> None:
    rgbs = _dataset(tmp_path)
    full = load_dataset(tmp_path)
    half = load_dataset(tmp_path, max_size=(20, 100))  # width-limited: factor 1/2
    c0, c1 = full.frames[0].camera, half.frames[0].camera
    assert (c1.width, c1.height) == (20, 15)
    assert (c1.fx, c1.fy, c1.cx, c1.cy) == pytest.approx((c0.fx / 2, c0.fy / 2, 10.0, 7.5))
    torch.testing.assert_close(c1.c2w, c0.c2w)
    img = half.load_image(0)
    # exact factor 2: area averaging is the mean of each 2x2 block
    ref = rgbs[0].astype(np.float64).reshape(15, 2, 20, 2, 3).mean(axis=(1, 3)) / 255
    torch.testing.assert_close(img, torch.from_numpy(ref).float(), atol=1e-6, rtol=0)
    depth = half.load_depth(1)
    assert depth.shape == (15, 20) and set(depth.unique().tolist()) == {2.0, 3.0}
    assert load_dataset(tmp_path, max_size=None).frames[0].camera.width == W


def test_load_image_refuses_a_file_of_another_shape(tmp_path: Path) -> None:
    _dataset(tmp_path)
    ds = load_dataset(tmp_path)
    ds.frames[0].image_path.write_bytes(encode_png(np.zeros((H, W + 7, 3), np.uint8)))
    with pytest.raises(InvalidInputError, match="inconsistent sizes"):
        ds.load_image(0)


def test_scene_bounds_cover_cameras_and_depth(tmp_path: Path) -> None:
    _dataset(tmp_path)
    lo, hi = load_dataset(tmp_path).scene_bounds(depth_stride=1)
    # cameras at x = 0 and 1 looking along +x; depth up to 3 m ahead -> x up to 4
    assert float(lo[0]) == pytest.approx(0.0) and float(hi[0]) == pytest.approx(4.0, abs=1e-5)
    # the image spans +-(20/30) * depth sideways: y in [-2, 2] at 3 m
    assert float(hi[1]) == pytest.approx(3.0 * (W / 2 - 0.5) / 30.0, abs=1e-4)
    assert float(lo[2]) < 0.5 < float(hi[2])


def test_dataset_invariants_and_unknown_folders(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="not a dataset"):
        load_dataset(tmp_path)
    with pytest.raises(InvalidInputError, match="not found"):
        load_dataset(tmp_path / "nope")
    _dataset(tmp_path / "d")
    ds = load_dataset(tmp_path / "d" / "transforms.json")
    with pytest.raises(InvalidInputError, match="sorted"):
        SceneDataset(ds.root, ds.frames[::-1])
    with pytest.raises(InvalidInputError, match="out of range"):
        SceneDataset(ds.root, ds.frames, test_indices=[5])
    with pytest.raises(InvalidInputError, match="no frame"):
        ds.index_of("zzz")
    assert ds.features_dir == tmp_path / "d" / "features"
