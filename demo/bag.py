"""The simulated robot's topics as a rosbag2 file (sqlite3), with the ``rosbags`` package.

Messages are serialised with ``rclpy.serialization`` (CDR, byte-identical to what a ROS 2
recorder stores) and the message definitions come from rosbags' ROS 2 Kilted type store, so
``ros2 bag play``/``info`` read the result. A bag holds the four topics of
:data:`demo.sim_robot.TOPICS`; reading groups the messages of one frame by their stamp.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from m3_core.errors import InvalidInputError

BAG_VERSION = 8


def _msg_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> the rclpy message class."""
    import importlib

    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def write_bag(path: str | Path, items: Iterable[tuple[int, dict[str, object]]]) -> int:
    """Write (stamp ns, {topic key: message}) items to a new rosbag2 folder ``path`` (an
    existing bag there is replaced; any other existing path is refused). Returns the
    number of frames written."""
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    from demo.sim_robot import TOPICS

    p = Path(path)
    if p.exists():
        if not (p / "metadata.yaml").is_file():
            raise InvalidInputError(f"{p} exists and is not a rosbag2 folder; pick a new path")
        shutil.rmtree(p)
    store = get_typestore(Stores.ROS2_KILTED)
    n = 0
    with Writer(p, version=BAG_VERSION) as writer:
        conns = {k: writer.add_connection(t, m, typestore=store) for k, (t, m) in TOPICS.items()}
        for t_ns, msgs in items:
            for key in ("odom", "info", "depth", "image"):
                if key in msgs:
                    writer.write(conns[key], t_ns, serialize_message(msgs[key]))
            n += 1
    return n


def read_bag(path: str | Path) -> Iterator[tuple[int, dict[str, object]]]:
    """Yield (stamp ns, {topic key: rclpy message}) per frame of a bag written by
    :func:`write_bag` (or any bag with these topics), grouping messages by header stamp in
    time order. Unknown topics are skipped."""
    from rclpy.serialization import deserialize_message
    from rosbags.rosbag2 import Reader

    from demo.sim_robot import TOPICS

    p = Path(path)
    if not (p / "metadata.yaml").is_file():
        raise InvalidInputError(f"{p} is not a rosbag2 folder (no metadata.yaml)")
    by_topic = {t: k for k, (t, _) in TOPICS.items()}
    with Reader(p) as reader:
        conns = [c for c in reader.connections if c.topic in by_topic]
        if not conns:
            raise InvalidInputError(f"{p} holds none of the topics {sorted(by_topic)}")
        classes = {c.id: _msg_class(c.msgtype) for c in conns}
        stamp, group = None, {}
        for conn, _, raw in reader.messages(connections=conns):
            msg = deserialize_message(bytes(raw), classes[conn.id])
            t = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            if stamp is not None and t != stamp and group:
                yield stamp, group
                group = {}
            stamp = t
            group[by_topic[conn.topic]] = msg
        if group:
            yield stamp, group
