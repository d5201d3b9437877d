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
