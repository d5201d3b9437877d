"""Memory server: a lifecycle node answering QueryText / GroundObject / RenderFeatureAt.

configure loads the memory (and the text encoders) into a ``MemoryPredictor``; cleanup frees
them; queries are refused unless the node is active. Renders run in their own callback group
on a MultiThreadedExecutor, so a long render never blocks the other services (the
predictor is read-only and thread-safe; loading swaps it in one assignment). Grounded
objects are published as rviz markers; the Gaussians as a PointCloud2, both in the memory's
world frame (the frame it was recorded in, unless ``world_frame`` is set). New
memories arrive from the trainer on ``memory_topic`` (any host; ``m3_ros.memory_delivery``)
or by path through ``~/load_memory``; the answers themselves are in ``m3_ros.memory_services``.
"""

from __future__ import annotations

import dataclasses

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.qos import QoSDurabilityPolicy, QoSProfile
from sensor_msgs.msg import PointCloud2
from visualization_msgs.msg import MarkerArray

from m3_core.errors import InvalidInputError, M3Error
from m3_ros import convert, markers
from m3_ros import memory_services as answers
from m3_ros.memory_delivery import MemoryInbox
from m3_ros.node_utils import guarded_service, run_node
from m3_ros.srv import GroundObject, LoadMemory, QueryText, RenderFeatureAt

PARAMS = {
    "memory_path": "",  # memory folder (memory.json + memory.safetensors)
    "device": "auto",
    "default_feature": "",  # empty: the first feature that can embed text
    "weights_dir": "",  # local model weights for text encoders (never downloaded)
    "world_frame": "",  # empty: the frame the memory was recorded in (else "map")
    "min_score": 0.0,  # 0: m3_core's default grounding threshold
    "max_results": 5,
    "max_render_pixels": 1280 * 960,
    "cloud_max_points": 50_000,
    "cloud_color": "rgb",  # rgb | relevancy (recoloured after each GroundObject)
    "autostart": True,  # configure + activate at start-up (no lifecycle manager needed)
    "memory_topic": "/trainer/memory",  # memories announced by the trainer; empty: ignore
    "memories_dir": "received_memories",  # where memories from other hosts are unpacked
    "shared_filesystem": True,  # load the trainer's folder in place when visible here
}


class MemoryServer(LifecycleNode):
    def __init__(self) -> None:
        super().__init__("memory_server")
        for name, default in PARAMS.items():
            self.declare_parameter(name, default)
        self.predictor = None
        self.active = self.held = False  # held: deactivated on request (lifecycle manager)
        latched = QoSProfile(depth=1, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
        self.marker_pub = self.create_publisher(MarkerArray, "~/grounded_markers", latched)
        self.cloud_pub = self.create_publisher(PointCloud2, "~/gaussians", latched)
        queries = MutuallyExclusiveCallbackGroup()  # renders get their own group
        for srv, name, handler, group in (
            (QueryText, "~/query_text", self.on_query, queries),
            (GroundObject, "~/ground_object", self.on_ground, queries),
            (RenderFeatureAt, "~/render_feature_at", self.on_render, None),
            (LoadMemory, "~/load_memory", self.on_load, None),
        ):
            group = group or MutuallyExclusiveCallbackGroup()
            self.create_service(srv, name, handler, callback_group=group)
        if self.p("memory_topic"):
            self.inbox = MemoryInbox(
                self,
                self.p("memory_topic"),
                self.p("memories_dir"),
                self._load,
                shared_filesystem=self.p("shared_filesystem"),
            )
        if self.p("autostart"):
            self.trigger_configure()
            if self.predictor is not None:
                self.trigger_activate()

    def p(self, name: str):
        return self.get_parameter(name).value

    # -- lifecycle --------------------------------------------------------------------------
    def _load(self, path: str) -> None:
        from m3_core.query import MemoryPredictor

        predictor = MemoryPredictor.load(
            path, device=self.p("device"), weights_dir=self.p("weights_dir") or None
        )
        self.predictor = predictor  # one reference swap: in-flight requests keep the old one
        self._publish_cloud(predictor)
        n = predictor.memory.num_gaussians
        self.get_logger().info(f"loaded memory {path}: {n} Gaussians in {self.frame(predictor)}")
        if self.p("autostart") and not self.held:
            self.active = True  # a memory arriving later activates an autostarted server

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        path = self.p("memory_path")
        if not path:
            self.get_logger().warning("no memory_path: waiting for the trainer or ~/load_memory")
            return TransitionCallbackReturn.SUCCESS
        try:
            self._load(path)
        except M3Error as exc:
            self.get_logger().error(f"cannot load memory: {exc}")
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        self.active, self.held = True, False
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self.active, self.held = False, True
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self.predictor = None
        return TransitionCallbackReturn.SUCCESS

    def ready(self):
        if self.predictor is None:
            raise InvalidInputError("no memory loaded: set memory_path or call ~/load_memory")
        if not self.active:
            raise InvalidInputError("memory server is not active (lifecycle state)")
        return self.predictor

    # -- services ---------------------------------------------------------------------------
    def settings(self, pred) -> answers.ServeSettings:
        names = [f.name for f in dataclasses.fields(answers.ServeSettings)]
        s = answers.ServeSettings(**{n: self.p(n) for n in names})
        s.world_frame = self.frame(pred)
        return s

    def frame(self, pred) -> str:
        """The world frame of answers: the parameter, else the memory's recorded one."""
        return self.p("world_frame") or pred.memory.extra.get("world_frame") or "map"

    @guarded_service
    def on_load(self, req: LoadMemory.Request, res: LoadMemory.Response):
        self._load(req.path)
        res.success, res.num_gaussians = True, self.predictor.memory.num_gaussians
        res.message = f"loaded {req.path}"
        return res

    @guarded_service
    def on_ground(self, req: GroundObject.Request, res: GroundObject.Response):
        pred = self.ready()
        s, stamp = self.settings(pred), self.get_clock().now().to_msg()
        res, objects = answers.ground(pred, req, res, s, stamp)
        self.marker_pub.publish(markers.grounded_markers(objects, s.world_frame, stamp))
        if self.p("cloud_color") == "relevancy":
            feature = req.feature or s.default_feature or None
            self._publish_cloud(pred, pred.relevancy(req.text, feature))
        return res

    @guarded_service
    def on_query(self, req: QueryText.Request, res: QueryText.Response):
        pred = self.ready()
        return answers.query(pred, req, res, self.settings(pred))

    @guarded_service
    def on_render(self, req: RenderFeatureAt.Request, res: RenderFeatureAt.Response):
        pred = self.ready()
        return answers.render(pred, req, res, self.settings(pred))

    def _publish_cloud(self, pred, relevancy=None) -> None:
        pts, rgb = pred.gaussian_cloud(self.p("cloud_max_points"), relevancy)
        stamp = self.get_clock().now().to_msg()
        self.cloud_pub.publish(convert.cloud_msg(pts, self.frame(pred), stamp, rgb))


def main(args: list[str] | None = None) -> int:
    return run_node(MemoryServer, args)


if __name__ == "__main__":
    import sys

    sys.exit(main())
