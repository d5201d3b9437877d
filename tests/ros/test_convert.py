"""Message <-> array conversions: round trips against known values, and bad messages."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

pytest.importorskip("rclpy")
from geometry_msgs.msg import Pose  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from m3_core.errors import InvalidInputError  # noqa: E402
from m3_core.types import Camera  # noqa: E402
from m3_ros import convert  # noqa: E402

RNG = np.random.default_rng(0)


def test_rgb_roundtrip_and_bgr_and_padded_step():
    rgb = RNG.integers(0, 255, (5, 7, 3), dtype=np.uint8)
    msg = convert.array_to_image(rgb, "rgb8")
    np.testing.assert_array_equal(convert.image_to_rgb(msg), rgb)
    bgr = convert.array_to_image(np.ascontiguousarray(rgb[..., ::-1]), "bgr8")
    np.testing.assert_array_equal(convert.image_to_rgb(bgr), rgb)
    # rows padded to a 32-byte step (as some drivers do)
    padded = np.zeros((5, 32), dtype=np.uint8)
    padded[:, :21] = rgb.reshape(5, 21)
    msg = Image(encoding="rgb8", height=5, width=7, step=32, data=padded.tobytes())
    np.testing.assert_array_equal(convert.image_to_rgb(msg), rgb)


def test_bad_images_are_refused():
    with pytest.raises(InvalidInputError, match="too short"):
        convert.image_to_rgb(Image(encoding="rgb8", height=4, width=4, step=12, data=b"\0" * 10))
    with pytest.raises(InvalidInputError, match="unsupported"):
        convert.image_to_rgb(Image(encoding="yuv422", height=1, width=1, step=2, data=b"\0\0"))
    with pytest.raises(InvalidInputError, match="empty"):
        convert.image_to_rgb(Image(encoding="rgb8"))
    with pytest.raises(InvalidInputError, match="decode"):
        convert.compressed_to_rgb(CompressedImage(format="jpeg", data=b"not a jpeg"))


def test_compressed_png_decodes_to_rgb():
    rgb = RNG.integers(0, 255, (6, 8, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", rgb[..., ::-1])
    assert ok
    msg = CompressedImage(format="png", data=buf.tobytes())
    np.testing.assert_array_equal(convert.compressed_to_rgb(msg), rgb)


def test_depth_encodings():
    mm = np.array([[0, 1000], [2500, 65535]], dtype=np.uint16)
    d = convert.depth_to_metres(convert.array_to_image(mm, "16UC1"))
    np.testing.assert_allclose(d, [[0.0, 1.0], [2.5, 65.535]], rtol=1e-6)
    d = convert.depth_to_metres(convert.array_to_image(mm, "16UC1"), depth_scale=0.0001)
    np.testing.assert_allclose(d[1, 0], 0.25, rtol=1e-6)
    f = np.array([[1.5, np.nan], [np.inf, -1.0]], dtype=np.float32)
    d = convert.depth_to_metres(convert.array_to_image(f, "32FC1"))
    np.testing.assert_array_equal(d, [[1.5, 0.0], [0.0, 0.0]])


def test_pose_roundtrip_and_refusals():
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = 1.0, -2.0, 0.5
    q = np.array([0.1, -0.3, 0.2, 0.9])
    q /= np.linalg.norm(q)
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = q
    m = convert.pose_to_matrix(pose)
    back = convert.matrix_to_pose_msg(m)
    assert (back.position.x, back.position.y, back.position.z) == (1.0, -2.0, 0.5)
    got = np.array(
        [back.orientation.x, back.orientation.y, back.orientation.z, back.orientation.w]
    )
    np.testing.assert_allclose(got * np.sign(got[3]), q, atol=1e-12)
    torch.testing.assert_close(m[:3, :3].T @ m[:3, :3], torch.eye(3, dtype=torch.float64))
    pose.orientation.w = 5.0
    with pytest.raises(InvalidInputError, match="norm"):
        convert.pose_to_matrix(pose)
    pose.orientation.w, pose.position.x = float(q[3]), float("nan")
    with pytest.raises(InvalidInputError, match="NaN"):
        convert.pose_to_matrix(pose)


def test_camera_info_roundtrip():
    cam = Camera(100.0, 110.0, 80.0, 60.0, 160, 120, torch.eye(4))
    info = convert.camera_info_msg(cam)
    back = convert.camera_from_info(info, torch.eye(4, dtype=torch.float64))
    assert (back.fx, back.fy, back.cx, back.cy, back.width, back.height) == (
        100.0,
        110.0,
        80.0,
        60.0,
        160,
        120,
    )
    info.k = [0.0] * 9
    with pytest.raises(InvalidInputError):
        convert.camera_from_info(info, torch.eye(4))


def test_feature_map_and_cloud_roundtrip():
    fm = RNG.normal(size=(3, 4, 5)).astype(np.float32)
    msg = convert.feature_map_msg(fm)
    assert [d.label for d in msg.layout.dim] == ["height", "width", "channels"]
    np.testing.assert_array_equal(convert.feature_map_from_msg(msg), fm)
    pts = RNG.normal(size=(10, 3))
    cloud = convert.cloud_msg(pts, "map", rgb=RNG.random((10, 3)))
    assert cloud.header.frame_id == "map" and cloud.width == 10 and cloud.point_step == 16
    np.testing.assert_allclose(convert.cloud_points(cloud), pts, rtol=1e-6, atol=1e-6)


def test_occupancy_grid_round_trip():
    import numpy as np

    from m3_core.navigation import GroundGrid
    from m3_ros import convert

    cells = np.array([[0, 100, -1], [100, 0, 0]], np.int8)
    grid = GroundGrid((0.5, -1.0), 0.1, cells, 0.02)
    msg = convert.occupancy_grid_msg(grid, "odom")
    assert (msg.info.width, msg.info.height, msg.header.frame_id) == (3, 2, "odom")
    assert list(msg.data) == [0, 100, -1, 100, 0, 0]
    occupied, free = convert.grid_cells_from_msg(msg)
    np.testing.assert_allclose(occupied, grid.occupied_xy())
    np.testing.assert_allclose(free, grid.free_xy())
    np.testing.assert_allclose(occupied, [[0.65, -0.95], [0.55, -0.85]])
