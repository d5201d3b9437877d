"""Trained memories travel from the trainer to memory servers as ``m3_ros/MemoryArchive``.

The trainer publishes each finished memory (reliable, transient-local, depth 1) on
``/trainer/memory``; a memory server on any host receives it, even one that starts or restarts
later. An archive is untrusted: its name must be a plain ``SAFE_NAME``; its sender must be one
of ``accept_memories_from`` when that is set; the trainer's folder (``source_path``) is loaded
in place only when it lies inside the server's trusted roots and holds the announced memory;
otherwise the archive is unpacked into ``memories_dir/<name>`` (verified, atomic;
``m3_core.memory.archive``). A refused archive leaves nothing behind and the memory that was
there (on disk and served) stays.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from rclpy.node import Node

from m3_core.errors import CheckpointError, InvalidInputError, M3Error
from m3_core.memory.archive import memory_digest, pack_memory, unpack_memory
from m3_ros.memory_services import Served, memory_frame
from m3_ros.msg import MemoryArchive
from m3_ros.node_utils import guarded_callback, latched_qos
from m3_ros.trust import check_id, confine


def archive_msg(path: str | Path, stamp) -> MemoryArchive:
    """The message announcing the memory saved in ``path``."""
    path = Path(path).resolve()
    msg = MemoryArchive(name=path.name, source_path=str(path), sha256=memory_digest(path))
    msg.header.stamp = stamp
    msg.archive = pack_memory(path)
    return msg


def memory_publisher(node: Node, topic: str = "~/memory"):
    return node.create_publisher(MemoryArchive, topic, latched_qos(1))


def load_served(path: str | Path, p: Callable[[str], object], roots: Sequence[str]) -> Served:
    """Load the memory at ``path`` (confined to ``roots`` unless empty) as a ``Served``."""
    from m3_core.query import MemoryPredictor

    where = confine(path, roots, "memory path") if roots else Path(path)
    pred = MemoryPredictor.load(where, device=p("device"), weights_dir=p("weights_dir") or None)
    frame = memory_frame(pred.memory, p("world_frame"))
    return Served(pred, frame, str(where), ground_grid(pred.memory, p))


def ground_grid(memory, p):
    """The memory's occupied ground (``m3_core.navigation.occupancy_grid``), computed once per
    loaded memory; None when it has no opaque Gaussians."""
    import torch

    from m3_core.navigation import occupancy_grid

    g = memory.gaussians
    with torch.no_grad():
        means = g["means"].detach().float().cpu().numpy()  # [N, 3]
        alpha = torch.sigmoid(g["opacities"].detach()).float().cpu().numpy()  # [N]
    try:
        return occupancy_grid(
            means,
            alpha,
            resolution=p("occupancy_resolution"),
            min_height=p("occupancy_min_height"),
            max_height=p("occupancy_max_height"),
            min_points=p("occupancy_min_points"),
        )
    except InvalidInputError:
        return None


def _swap_in(staging: Path, dest: Path, load: Callable[[str], object]):
    """Move ``staging`` to ``dest`` and load it; if loading fails, put back what was there."""
    old = dest.with_name(f".old.{dest.name}")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    staging.rename(dest)
    try:
        result = load(str(dest))
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)  # refused: deleted
        if old.exists():
            old.rename(dest)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return result


def receive(msg: MemoryArchive, roots: Sequence[str], shared_filesystem: bool, load):
    """Load the announced memory: the trainer's folder when visible, inside ``roots`` (the
    first is ``memories_dir``) and identical; else the archive unpacked into
    ``memories_dir/<name>``. Returns what ``load`` returned."""
    name = check_id(msg.name, "memory name")
    if shared_filesystem and msg.source_path:
        try:
            source = confine(msg.source_path, roots, "source_path")
            if memory_digest(source) == msg.sha256:
                return load(str(source))
        except M3Error:
            pass  # not visible from here or not trusted: use the archive
    dest = Path(roots[0]).expanduser().resolve() / name
    if dest.is_dir():
        try:
            if memory_digest(dest) == msg.sha256:
                return load(str(dest))  # already here
        except CheckpointError:
            pass
    staging = dest.with_name(f".incoming.{name}")
    shutil.rmtree(staging, ignore_errors=True)
    data = msg.archive.tobytes() if hasattr(msg.archive, "tobytes") else bytes(msg.archive)
    try:
        unpack_memory(data, staging)
        if memory_digest(staging) != msg.sha256:
            raise CheckpointError(f"memory archive {name!r} does not hold the announced memory")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return _swap_in(staging, dest, load)


def sender_name(node: Node, topic: str, info) -> str:
    """The fully qualified name of the node that published a message ("" if unknown)."""
    gid = (info or {}).get("publisher_gid") or {}
    data = list(gid.get("data", [])) if isinstance(gid, dict) else []
    for pub in node.get_publishers_info_by_topic(topic):
        n = min(len(data), len(pub.endpoint_gid))
        if n and list(pub.endpoint_gid)[:n] == data[:n]:
            ns = pub.node_namespace.rstrip("/")
            return f"{ns}/{pub.node_name}"
    return ""


def sender_allowed(sender: str, allowed: Sequence[str]) -> bool:
    """``allowed`` entries are node names ("trainer") or fully qualified ("/robot/trainer")."""
    names = [a for a in allowed if a]
    return not names or any(sender == a or sender.rsplit("/", 1)[-1] == a for a in names)


class MemoryInbox:
    """Subscribes to announced memories while the server is active; hands each new one to
    ``load(path)`` (the server's: confined, swapped in)."""

    def __init__(self, node: Node, topic: str, load: Callable[[str], object], group) -> None:
        self.node, self.topic, self.load = node, node.resolve_topic_name(topic), load
        p = node.get_parameter
        self.roots = [p("memories_dir").value, *p("load_roots").value]
        self.allowed = list(p("accept_memories_from").value)
        self.shared_filesystem = p("shared_filesystem").value
        self.last_sha = ""
        self.sub = node.create_subscription(
            MemoryArchive,
            self.topic,
            guarded_callback(node, self.on_memory),
            latched_qos(1),
            callback_group=group,
        )

    def destroy(self) -> None:
        self.node.destroy_subscription(self.sub)

    def on_memory(self, msg: MemoryArchive, info) -> None:
        log = self.node.get_logger()
        if msg.sha256 == self.last_sha:
            return
        sender = sender_name(self.node, self.topic, info)
        try:
            if not sender_allowed(sender, self.allowed):
                raise InvalidInputError(f"sender {sender or 'unknown'!r} is not accepted")
            receive(msg, self.roots, self.shared_filesystem, lambda path: self.load(path))
        except M3Error as exc:  # a bad archive is logged; the current memory stays
            log.error(f"ignored memory {msg.name[:80]!r}: {exc}")
            return
        self.last_sha = msg.sha256
        log.info(f"memory {msg.name!r} ({len(msg.archive) / 1e6:.1f} MB) received from {sender}")
