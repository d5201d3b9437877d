"""The only module that knows both ROS messages and arrays/tensors.

Conventions: images become numpy arrays (RGB uint8 [H, W, 3]; depth float32 metres [H, W]);
poses become 4x4 float64 torch tensors; every malformed message raises
``m3_core.errors.InvalidInputError`` with a readable message (nodes turn it into
``success=false`` or a logged warning, never a crash).
"""

from __future__ import annotations

import array

import numpy as np
import torch
from geometry_msgs.msg import Point, Pose, PoseStamped, Transform
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Float32MultiArray, Header, MultiArrayDimension

from m3_core.data.undistort import LensModel
from m3_core.errors import InvalidInputError
from m3_core.types import Camera, matrix_to_pose, pose_matrix

_COLOUR = {"rgb8": (3, False), "bgr8": (3, True), "rgba8": (4, False), "bgra8": (4, True)}
MAX_IMAGE_PIXELS = 8192 * 8192


def _check_size(msg, bytes_per_pixel: int) -> None:
    if msg.height == 0 or msg.width == 0:
        raise InvalidInputError("image is empty (width or height is 0)")
    if msg.height * msg.width > MAX_IMAGE_PIXELS:
        raise InvalidInputError(f"image {msg.width}x{msg.height} is too large")
    if msg.step < msg.width * bytes_per_pixel or len(msg.data) < msg.step * msg.height:
        raise InvalidInputError(
            f"image data too short: {len(msg.data)} bytes for {msg.width}x{msg.height} "
            f"{msg.encoding} with step {msg.step}"
        )


def _rows(msg, dtype, channels: int) -> np.ndarray:
    itemsize = np.dtype(dtype).itemsize
    _check_size(msg, itemsize * channels)
    buf = np.frombuffer(bytes(msg.data), dtype=np.uint8)[: msg.step * msg.height]
    rows = buf.reshape(msg.height, msg.step)[:, : msg.width * itemsize * channels]
    dt = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    out = np.ascontiguousarray(rows).view(dt).reshape(msg.height, msg.width, channels)
    return out.astype(np.dtype(dtype).newbyteorder("="), copy=False)


def image_to_rgb(msg: Image) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8) -> uint8 [H, W, 3] RGB."""
    enc = msg.encoding.lower()
    if enc == "mono8":
        return np.repeat(_rows(msg, np.uint8, 1), 3, axis=2)
    if enc not in _COLOUR:
        raise InvalidInputError(f"unsupported colour encoding {msg.encoding!r}")
    ch, bgr = _COLOUR[enc]
    arr = _rows(msg, np.uint8, ch)[..., :3]
    return np.ascontiguousarray(arr[..., ::-1] if bgr else arr)


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png) -> uint8 [H, W, 3] RGB."""
    import cv2

    data = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise InvalidInputError(f"cannot decode compressed image (format {msg.format!r})")
    return np.ascontiguousarray(img[..., ::-1])


def depth_to_metres(msg: Image, depth_scale: float = 0.001) -> np.ndarray:
    """16UC1 (x depth_scale, default millimetres) or 32FC1 (metres) -> float32 [H, W];
    invalid pixels (0, NaN, inf) become 0."""
    enc = msg.encoding.upper()
    if enc in ("16UC1", "MONO16"):
        d = _rows(msg, np.uint16, 1)[..., 0].astype(np.float32) * float(depth_scale)
    elif enc == "32FC1":
        d = _rows(msg, np.float32, 1)[..., 0].astype(np.float32)
    else:
        raise InvalidInputError(f"unsupported depth encoding {msg.encoding!r}")
    d[~np.isfinite(d) | (d < 0)] = 0.0
    return d


def array_to_image(arr: np.ndarray, encoding: str, header=None) -> Image:
    """uint8 [H, W, 3] -> rgb8, float32 [H, W] -> 32FC1, uint16 [H, W] -> 16UC1."""
    arr = np.ascontiguousarray(arr)
    msg = Image(encoding=encoding, height=arr.shape[0], width=arr.shape[1], is_bigendian=0)
    if header is not None:
        msg.header = header
    msg.step = arr.shape[1] * arr.itemsize * (arr.shape[2] if arr.ndim == 3 else 1)
    msg.data = arr.tobytes()
    return msg


def pose_to_matrix(pose: Pose) -> torch.Tensor:
    """geometry_msgs/Pose -> [4, 4] float64 (refuses NaN and non-unit quaternions)."""
    p, q = pose.position, pose.orientation
    return pose_matrix([p.x, p.y, p.z], [q.x, q.y, q.z, q.w])


def transform_to_matrix(tf: Transform) -> torch.Tensor:
    """geometry_msgs/Transform (a tf2 lookup) -> [4, 4] float64, checked like a pose."""
    v, q = tf.translation, tf.rotation
    return pose_matrix([v.x, v.y, v.z], [q.x, q.y, q.z, q.w], what="transform")


def matrix_to_pose_msg(m: torch.Tensor) -> Pose:
    t, q = matrix_to_pose(m)
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = t
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = q
    return pose


def pose_stamped(m: torch.Tensor, frame_id: str, stamp=None) -> PoseStamped:
    msg = PoseStamped(pose=matrix_to_pose_msg(m))
    msg.header.frame_id = frame_id
    if stamp is not None:
        msg.header.stamp = stamp
    return msg


def camera_from_info(info: CameraInfo, c2w: torch.Tensor) -> Camera:
    """CameraInfo (K, size) + optical-frame camera-to-world [4, 4] -> Camera."""
    k = [float(v) for v in info.k]
    if info.width == 0 or info.height == 0 or k[0] <= 0 or k[4] <= 0:
        raise InvalidInputError("camera_info needs width, height and a K with fx, fy > 0")
    return Camera(k[0], k[4], k[2], k[5], int(info.width), int(info.height), c2w.float())


def lens_model(info: CameraInfo) -> LensModel:
    """CameraInfo -> the hashable lens description ``m3_core.data.undistort`` rectifies."""
    return LensModel(
        info.distortion_model,
        tuple(float(v) for v in info.d),
        tuple(float(v) for v in info.k),
        tuple(float(v) for v in info.r),
        tuple(float(v) for v in info.p),
        int(info.width),
        int(info.height),
    )


def rectified_camera_from_info(info: CameraInfo, c2w: torch.Tensor) -> Camera:
    """For an already rectified image (``image_rect``): its intrinsics are P's left 3x3 (ROS
    convention: K and D describe the raw image)."""
    p = [float(v) for v in info.p]
    if info.width == 0 or info.height == 0 or p[0] <= 0 or p[5] <= 0:
        raise InvalidInputError("camera_info needs width, height and a P with fx, fy > 0")
    return Camera(p[0], p[5], p[2], p[6], int(info.width), int(info.height), c2w.float())


def camera_info_msg(camera: Camera, frame_id: str = "camera_optical_frame") -> CameraInfo:
    info = CameraInfo(width=camera.width, height=camera.height, distortion_model="plumb_bob")
    info.header.frame_id = frame_id
    info.k = [camera.fx, 0.0, camera.cx, 0.0, camera.fy, camera.cy, 0.0, 0.0, 1.0]
    info.p = [camera.fx, 0.0, camera.cx, 0.0, 0.0, camera.fy, camera.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.d = [0.0] * 5
    return info


def feature_map_msg(arr: np.ndarray) -> Float32MultiArray:
    """float [H, W, C] -> Float32MultiArray, row-major, dims labelled height/width/channels."""
    h, w, c = arr.shape
    msg = Float32MultiArray()
    msg.layout.dim = [
        MultiArrayDimension(label="height", size=h, stride=h * w * c),
        MultiArrayDimension(label="width", size=w, stride=w * c),
        MultiArrayDimension(label="channels", size=c, stride=c),
    ]
    data = array.array("f")  # the sequence's own type: no per-element Python floats
    data.frombytes(np.ascontiguousarray(arr, dtype=np.float32).tobytes())
    msg.data = data
    return msg


def feature_map_from_msg(msg: Float32MultiArray) -> np.ndarray:
    dims = [d.size for d in msg.layout.dim]
    return np.frombuffer(msg.data, dtype=np.float32).reshape(dims)


def cloud_msg(points: np.ndarray, frame_id: str, stamp=None, rgb: np.ndarray | None = None):
    """Points [N, 3] (+ RGB float [N, 3] in [0, 1]) -> sensor_msgs/PointCloud2 (x y z [rgb]),
    packed by the `pointcloud2` package (rgb as the usual float-packed 0x00RRGGBB)."""
    from pointcloud2 import create_cloud, fields_from_dtype

    dtype = [("x", np.float32), ("y", np.float32), ("z", np.float32)]
    if rgb is not None:
        dtype.append(("rgb", np.float32))
    arr = np.zeros(len(points), dtype=dtype)
    for i, axis in enumerate("xyz"):
        arr[axis] = points[:, i]
    if rgb is not None:
        c = (np.clip(rgb, 0, 1) * 255).astype(np.uint32)
        arr["rgb"] = ((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]).view(np.float32)
    header = Header(frame_id=frame_id)
    if stamp is not None:
        header.stamp = stamp
    cloud = create_cloud(header, fields_from_dtype(arr.dtype), arr)
    return PointCloud2(
        header=header,
        height=cloud.height,
        width=cloud.width,
        fields=[
            PointField(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count)
            for f in cloud.fields
        ],
        is_bigendian=cloud.is_bigendian,
        point_step=cloud.point_step,
        row_step=cloud.row_step,
        data=cloud.data,
        is_dense=cloud.is_dense,
    )


def cloud_points(msg: PointCloud2) -> np.ndarray:
    """sensor_msgs/PointCloud2 -> xyz float [N, 3] (via the `pointcloud2` package)."""
    from pointcloud2 import read_points

    pts = read_points(msg, field_names=["x", "y", "z"], skip_nans=True)
    return np.stack([pts["x"], pts["y"], pts["z"]], axis=-1).astype(np.float64)


def point_msg(p) -> Point:
    return Point(x=float(p[0]), y=float(p[1]), z=float(p[2]))


def grounded_object_msg(obj, frame_id: str, stamp, msg_type):
    """m3_core.query GroundedObject -> m3_ros/GroundedObject (axis-aligned box, in frame_id)."""
    lo, hi = np.asarray(obj.bbox_min, float), np.asarray(obj.bbox_max, float)
    msg = msg_type(label=obj.label, score=float(obj.score), num_gaussians=int(obj.num_gaussians))
    msg.center.header.frame_id = frame_id
    msg.center.header.stamp = stamp
    msg.center.pose.position = point_msg(obj.center)
    msg.center.pose.orientation.w = 1.0
    msg.size.x, msg.size.y, msg.size.z = (float(v) for v in hi - lo)
    return msg


def rgb_to_compressed(rgb: np.ndarray, fmt: str = "png", quality: int = 90) -> CompressedImage:
    """uint8 [H, W, 3] RGB -> sensor_msgs/CompressedImage (png lossless, or jpeg)."""
    import cv2

    ext = ".png" if fmt == "png" else ".jpg"
    params = [] if fmt == "png" else [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(rgb[..., ::-1]), params)
    if not ok:
        raise InvalidInputError(f"cannot encode image as {fmt}")
    return CompressedImage(format=fmt, data=buf.tobytes())


def occupancy_grid_msg(grid, frame_id: str, stamp=None):
    """m3_core.navigation.GroundGrid -> nav_msgs/OccupancyGrid (row-major from cell [0, 0] at
    ``origin``, 100 occupied, 0 free, -1 unknown; the grid lies at the floor height)."""
    from nav_msgs.msg import OccupancyGrid

    msg = OccupancyGrid()
    msg.header.frame_id = frame_id
    if stamp is not None:
        msg.header.stamp = stamp
        msg.info.map_load_time = stamp
    height, width = grid.cells.shape
    msg.info.resolution, msg.info.width, msg.info.height = float(grid.resolution), width, height
    o = msg.info.origin
    o.position.x, o.position.y, o.position.z = grid.origin[0], grid.origin[1], grid.floor_z
    o.orientation.w = 1.0
    data = array.array("b")
    data.frombytes(np.ascontiguousarray(grid.cells, dtype=np.int8).tobytes())
    msg.data = data
    return msg


def occupied_xy_from_msg(msg, threshold: int = 65) -> np.ndarray:
    """Centres [M, 2] of the cells of a nav_msgs/OccupancyGrid at least ``threshold`` occupied
    (axis-aligned grids only: a rotated origin is refused)."""
    return grid_cells_from_msg(msg, threshold)[0]


def grid_cells_from_msg(msg, threshold: int = 65) -> tuple[np.ndarray, np.ndarray]:
    """(occupied [M, 2], free [K, 2]) cell centres of a nav_msgs/OccupancyGrid: occupied at
    least ``threshold``, free 0..``threshold``-1 (unknown -1 in neither)."""
    info = msg.info
    q = info.origin.orientation
    if abs(q.x) + abs(q.y) + abs(q.z) > 1e-6:
        raise InvalidInputError("occupancy grid with a rotated origin is not supported")
    if not info.resolution > 0 or len(msg.data) != info.width * info.height:
        raise InvalidInputError("occupancy grid data does not match its size")
    cells = np.frombuffer(msg.data, dtype=np.int8).reshape(info.height, info.width)

    def centres(mask):
        rows, cols = np.nonzero(mask)
        x = info.origin.position.x + (cols + 0.5) * info.resolution
        y = info.origin.position.y + (rows + 0.5) * info.resolution
        return np.stack([x, y], axis=1).astype(np.float64)

    return centres(cells >= threshold), centres((cells >= 0) & (cells < threshold))
