"""ros2 launch m3_ros memory.launch.py [params_file:=...] [robot:=spot|go2] [memory_path:=...]
[use_sim_time:=...] [collector:=true] [trainer:=true] [memory_server:=true] [nav_bridge:=true]

Starts the m3_ros nodes with config/m3_params.yaml, overlaid with config/robots/<robot>.yaml
(the robot driver's topics and frames) when ``robot`` is given. The pip-route twin (no
launch_ros) is ``m3-bringup``; tests/ros/test_launch.py keeps both in step with m3_ros/nodes.py.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

NODES = {
    "collector": "record keyframes from the robot's camera and pose",
    "trainer": "serve the TrainMemory action",
    "memory_server": "serve QueryText / GroundObject / RenderFeatureAt",
    "nav_bridge": "turn grounding results into navigation goals",
}


def robot_file(share: str, robot: str) -> list:
    """[config/robots/<robot>.yaml], or [] for no robot; an unknown name stops the launch."""
    if not robot:
        return []
    folder = os.path.join(share, "config", "robots")
    path = os.path.join(folder, robot + ".yaml")
    if not os.path.isfile(path):
        known = sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".yaml"))
        raise RuntimeError(f"unknown robot {robot!r}: known robots are {', '.join(known)}")
    return [path]


def make_nodes(context):
    params_file = LaunchConfiguration("params_file").perform(context)
    share = get_package_share_directory("m3_ros")
    overlays = robot_file(share, LaunchConfiguration("robot").perform(context))
    use_sim_time = LaunchConfiguration("use_sim_time").perform(context).lower() == "true"
    memory_path = LaunchConfiguration("memory_path").perform(context)
    nodes = []
    for name in NODES:
        overrides = {"use_sim_time": use_sim_time}
        if name == "memory_server" and memory_path:
            overrides["memory_path"] = memory_path  # empty: keep the YAML's value
        nodes.append(
            Node(
                package="m3_ros",
                executable=name,
                name=name,
                output="screen",
                respawn=True,  # a crash of one node does not take the others down
                respawn_delay=2.0,
                parameters=[params_file, *overlays, overrides],
                condition=IfCondition(LaunchConfiguration(name)),
            )
        )
    return nodes


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("m3_ros")
    args = [
        DeclareLaunchArgument(
            "params_file",
            default_value=os.path.join(share, "config", "m3_params.yaml"),
            description="YAML with the nodes' ros__parameters",
        ),
        DeclareLaunchArgument(
            "robot",
            default_value="",
            description="robot driver profile config/robots/<robot>.yaml (spot, go2); empty: none",
        ),
        DeclareLaunchArgument(
            "memory_path", default_value="", description="memory folder (empty: the YAML's)"
        ),
        DeclareLaunchArgument(
            "use_sim_time", default_value="false", description="use /clock (sim or bag replay)"
        ),
    ]
    for name, what in NODES.items():
        args.append(
            DeclareLaunchArgument(name, default_value="true", description=f"start {name}: {what}")
        )
    return LaunchDescription([*args, OpaqueFunction(function=make_nodes)])
