"""Trained memories travel from the trainer to memory servers as ``m3_ros/MemoryArchive``.

The trainer publishes each finished memory (reliable, transient-local, depth 1) on
``/trainer/memory``; a memory server on any host receives it, even one that starts or restarts
later. The server loads the trainer's folder in place when it can see it (same host or a
shared filesystem, checked by SHA-256), else unpacks the archive into its own
``memories_dir/<name>`` (atomically, verified; ``m3_core.memory.archive``) and loads that.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node

from m3_core.errors import CheckpointError, M3Error
from m3_core.memory.archive import memory_digest, pack_memory, unpack_memory
from m3_ros.msg import MemoryArchive
from m3_ros.node_utils import guarded_callback, latched_qos


def archive_msg(path: str | Path, stamp) -> MemoryArchive:
    """The message announcing the memory saved in ``path``."""
    path = Path(path).resolve()
    msg = MemoryArchive(name=path.name, source_path=str(path), sha256=memory_digest(path))
    msg.header.stamp = stamp
    msg.archive = pack_memory(path)
    return msg


def memory_publisher(node: Node, topic: str = "~/memory"):
    return node.create_publisher(MemoryArchive, topic, latched_qos(1))


def receive(msg: MemoryArchive, memories_dir: Path, shared_filesystem: bool) -> Path:
    """Where the announced memory is on this host: the trainer's folder when visible and
    identical, else a verified copy unpacked from the archive into ``memories_dir``."""
    source = Path(msg.source_path)
    if shared_filesystem and msg.source_path:
        try:
            if memory_digest(source) == msg.sha256:
                return source
        except M3Error:
            pass  # not visible from here: use the archive
    name = Path(msg.name).name
    if not name or name in {".", ".."}:
        raise CheckpointError(f"memory archive has a bad name {msg.name!r}")
    data = msg.archive.tobytes() if hasattr(msg.archive, "tobytes") else bytes(msg.archive)
    dest = unpack_memory(data, memories_dir / name)
    if memory_digest(dest) != msg.sha256:
        raise CheckpointError(f"memory archive {name!r} does not hold the announced memory")
    return dest


class MemoryInbox:
    """Subscribes to announced memories and hands each new one's local path to ``load``."""

    def __init__(
        self,
        node: Node,
        topic: str,
        memories_dir: str | Path,
        load: Callable[[Path], None],
        *,
        shared_filesystem: bool = True,
    ) -> None:
        self.node, self.load = node, load
        self.memories_dir = Path(memories_dir).expanduser()
        self.shared_filesystem = shared_filesystem
        self.last_sha = ""
        node.create_subscription(
            MemoryArchive,
            topic,
            guarded_callback(node, self.on_memory),
            latched_qos(1),
            callback_group=MutuallyExclusiveCallbackGroup(),
        )

    def on_memory(self, msg: MemoryArchive) -> None:
        log = self.node.get_logger()
        if msg.sha256 == self.last_sha:
            return
        try:
            path = receive(msg, self.memories_dir, self.shared_filesystem)
            self.load(path)
        except M3Error as exc:  # a bad archive is logged; the current memory stays
            log.error(f"ignored memory {msg.name!r}: {exc}")
            return
        self.last_sha = msg.sha256
        size = len(msg.archive) / 1e6
        log.info(f"memory {msg.name!r} ({size:.1f} MB) received and loaded from {path}")
