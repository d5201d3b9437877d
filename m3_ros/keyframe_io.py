"""Keyframes on disk and on the wire: the collector's writer thread, and the trainer's receiver.

``KeyframeSink`` (collector) writes selected keyframes into a nerfstudio dataset from its own
thread, so a slow disk never stalls the subscriptions, and then streams each as an
``m3_ros/Keyframe`` (images as PNG/JPEG). ``KeyframeReceiver`` (trainer, possibly on another
host) writes streamed keyframes into ``recordings_dir/<recording_id>``; a re-sent keyframe
(transient-local history after a reconnect) is skipped. Both write atomically and resume.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from m3_core.data.transforms import TransformsWriter
from m3_core.data.undistort import Rectifier, RectifierCache
from m3_core.errors import InvalidInputError, M3Error
from m3_core.types import Camera
from m3_ros import convert
from m3_ros.msg import Keyframe
from m3_ros.trust import check_id


def choose_recording(output_dir: Path, recording_id: str, resume_window_s: float) -> str:
    """``recording_id`` when given; else the newest ``rec_*`` in ``output_dir`` written less
    than ``resume_window_s`` ago (a collector respawned after a crash continues its
    recording); else a new ``rec_<date>_<time>``."""
    if recording_id:
        return recording_id
    now, recent = time.time(), []
    for f in Path(output_dir).glob("rec_*/transforms.json"):
        age = now - f.stat().st_mtime
        if age < resume_window_s:
            recent.append((age, f.parent.name))
    return min(recent)[1] if recent else time.strftime("rec_%Y%m%d_%H%M%S")


def check_frame(
    rgb: np.ndarray,  # [H, W, 3] uint8, as the camera took it
    depth_m: np.ndarray | None,  # [H, W] metres, registered to the colour camera
    info: CameraInfo,
    cache: RectifierCache,
    image_rectified: bool = False,
) -> Rectifier | None:
    """Refuse a frame that cannot become a keyframe (sizes that disagree with the camera info,
    an unsupported lens, bad intrinsics) before it is selected. Returns the frame's cached
    ``Rectifier``, or None for an ``image_rect`` topic (``image_rectified``: P describes it)."""
    size = (int(info.width), int(info.height))
    for what, arr in (("image", rgb), ("depth", depth_m)):
        if arr is not None and (arr.shape[1], arr.shape[0]) != size:
            raise InvalidInputError(
                f"{what} is {arr.shape[1]}x{arr.shape[0]} but camera_info says {size[0]}x{size[1]}"
            )
    if image_rectified:
        convert.rectified_camera_from_info(info, torch.eye(4, dtype=torch.float64))
        return None
    return cache.get(convert.lens_model(info))  # builds (and caches) the remap tables, or raises


def rectify(
    rgb: np.ndarray,  # [H, W, 3] uint8
    depth_m: np.ndarray | None,  # [H, W] metres
    info: CameraInfo,
    c2w: torch.Tensor,  # [4, 4] camera optical -> world
    rect: Rectifier | None,  # from check_frame
) -> tuple[np.ndarray, np.ndarray | None, Camera, bool]:
    """The pinhole keyframe M3 trains on: (rgb, depth, camera, remapped). A distorted image is
    undistorted with its CameraInfo (``m3_core.data.undistort``); an ``image_rect`` one
    (``rect`` None) takes the intrinsics from P."""
    if rect is None:
        return rgb, depth_m, convert.rectified_camera_from_info(info, c2w), False
    if rect.identity:
        return rgb, depth_m, rect.camera(c2w.float()), False
    depth_m = None if depth_m is None else rect.depth(depth_m)
    return rect.rgb(rgb), depth_m, rect.camera(c2w.float()), True


@dataclass
class KeyframeJob:
    rgb: np.ndarray  # [H, W, 3] uint8, pinhole (rectified when the lens distorts)
    camera: Camera  # pinhole intrinsics + pose of ``rgb``
    depth_m: np.ndarray | None  # [H, W] metres, aligned with ``rgb``
    image: Image | CompressedImage  # the source messages (streamed as they came if unchanged)
    info: CameraInfo
    world_frame: str
    remapped: bool = False  # rgb / depth_m were undistorted: stream those, not the sources


class KeyframeSink:
    """Queue -> writer thread -> dataset (+ ``publish(Keyframe)`` when given)."""

    def __init__(self, root: Path, recording_id: str, logger, publish=None, queue_size=30):
        self.writer = TransformsWriter(root)
        self.recording_id, self.logger, self.publish = recording_id, logger, publish
        self.jobs: queue.Queue = queue.Queue(maxsize=queue_size)
        self.selected = self.written = self.dropped = 0  # this session, for ~/status
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def __len__(self) -> int:
        return len(self.writer)

    def put(self, job: KeyframeJob) -> bool:
        with self.lock:
            self.selected += 1
        try:
            self.jobs.put_nowait(job)
            return True
        except queue.Full:
            self._count_drop()
            self.logger.warning("writer is behind: dropped a keyframe")
            return False

    def _count_drop(self) -> None:
        with self.lock:
            self.dropped += 1

    def counts(self) -> dict[str, int]:
        with self.lock:
            selected, written, dropped = self.selected, self.written, self.dropped
        return {
            "keyframes_selected": selected,
            "keyframes_queued": selected - written - dropped,
            "keyframes_dropped": dropped,
            "keyframes": len(self.writer),
        }

    def close(self, timeout: float = 10.0) -> None:
        self.jobs.put(None)
        self.thread.join(timeout=timeout)

    def _loop(self) -> None:
        while (job := self.jobs.get()) is not None:
            try:
                frame = self.writer.add_frame(
                    None, job.rgb, job.camera, job.depth_m, world_frame=job.world_frame
                )
            except (M3Error, OSError) as exc:
                self._count_drop()
                self.logger.error(f"could not write a keyframe: {exc}")
                continue
            with self.lock:
                self.written += 1
            self.logger.info(f"keyframe {frame.name} ({len(self.writer)} total)")
            if self.publish is not None:
                self.publish(self.message(frame.name, job))

    def message(self, name: str, job: KeyframeJob) -> Keyframe:
        """The keyframe as written: pinhole camera info and pose, images as on disk."""
        info = convert.camera_info_msg(job.camera, job.info.header.frame_id)
        info.header.stamp = job.info.header.stamp
        msg = Keyframe(recording_id=self.recording_id, name=name, camera_info=info)
        msg.header.stamp = job.image.header.stamp
        msg.header.frame_id = job.world_frame
        if isinstance(job.image, CompressedImage) and not job.remapped:
            msg.image = job.image
        else:
            fmt = "jpeg" if isinstance(job.image, CompressedImage) else "png"
            msg.image = convert.rgb_to_compressed(job.rgb, fmt)
        if job.depth_m is not None:  # metres as written (no depth_scale to agree on)
            msg.depth = convert.array_to_image(job.depth_m.astype(np.float32), "32FC1")
        msg.camera_pose = convert.matrix_to_pose_msg(job.camera.c2w.double())
        return msg


class KeyframeReceiver:
    """Streamed keyframes -> ``root/<recording_id>`` datasets on this host."""

    def __init__(self, root: str | Path, logger) -> None:
        self.root, self.logger = Path(root).expanduser(), logger
        self.writers: dict[str, TransformsWriter] = {}
        self.rectifiers = RectifierCache()  # keyframes from a sender that did not undistort

    def on_keyframe(self, msg: Keyframe) -> None:
        try:
            check_id(msg.recording_id, "recording_id")
            writer = self.writers.get(msg.recording_id)
            if writer is None:
                writer = self.writers[msg.recording_id] = TransformsWriter(
                    self.root / msg.recording_id
                )
            if msg.name in writer:
                return  # re-sent keyframe
            rgb = convert.compressed_to_rgb(msg.image)
            depth = convert.depth_to_metres(msg.depth) if msg.depth.width else None
            c2w = convert.pose_to_matrix(msg.camera_pose)
            rect = check_frame(rgb, depth, msg.camera_info, self.rectifiers)
            rgb, depth, camera, _ = rectify(rgb, depth, msg.camera_info, c2w, rect)
            writer.add_frame(msg.name, rgb, camera, depth, world_frame=msg.header.frame_id)
        except M3Error as exc:
            self.logger.warning(f"dropped keyframe {msg.name!r}: {exc}")
