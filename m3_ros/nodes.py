"""The package's nodes: one table shared by the pip-route runner and checked against the
launch file and config/m3_params.yaml by the tests."""

from __future__ import annotations

import importlib

NODES: dict[str, str] = {
    "collector": "camera + pose -> keyframes -> dataset (and keyframe stream)",
    "trainer": "TrainMemory action server (m3_core.train)",
    "memory_server": "lifecycle node: QueryText / GroundObject / RenderFeatureAt, rviz markers",
    "nav_bridge": "grounding result -> stand-off goal -> Nav2 or /goal_pose",
}


def node_params(name: str) -> dict:
    """The declared parameters (name -> default) of node ``name``."""
    return dict(importlib.import_module(f"m3_ros.{name}").PARAMS)


HEADER = """\
# Parameters of every m3_ros node, keyed by node name (ROS 2 convention). Used by both
# `ros2 launch m3_ros memory.launch.py` and the pip-route runner `m3-bringup`. Generated from
# the nodes' PARAMS tables (comments there): python -m m3_ros.nodes > config/m3_params.yaml
"""


def params_yaml() -> str:
    """config/m3_params.yaml as derived from the nodes' declared parameters."""
    import yaml

    lines = [HEADER.rstrip("\n")]
    for name in NODES:
        lines += [f"{name}:", "  ros__parameters:"]
        for key, value in node_params(name).items():
            text = yaml.safe_dump(value, default_flow_style=True).strip()
            lines.append(f"    {key}: {text.removesuffix('...').strip()}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(params_yaml(), end="")
