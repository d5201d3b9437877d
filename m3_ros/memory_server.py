"""Memory server: a lifecycle node answering QueryText / GroundObject / RenderFeatureAt.

configure loads the memory (and the text encoders) into a ``MemoryPredictor``; cleanup frees
them; queries are refused unless the node is active. Renders run in their own callback group
on a MultiThreadedExecutor, so a long render never blocks the other services (the
predictor is read-only and thread-safe; loading swaps it in one assignment). Grounded
objects are published as rviz markers; the Gaussians as a PointCloud2 (map frame).
"""

from __future__ import annotations

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.qos import QoSDurabilityPolicy, QoSProfile
from sensor_msgs.msg import PointCloud2
from visualization_msgs.msg import MarkerArray

from m3_core.errors import InvalidInputError, M3Error
from m3_ros import convert, markers
from m3_ros.msg import GroundedObject
from m3_ros.node_utils import guarded_service, run_node
from m3_ros.srv import GroundObject, LoadMemory, QueryText, RenderFeatureAt

PARAMS = {
    "memory_path": "",  # memory folder (memory.json + memory.safetensors)
    "device": "auto",
    "default_feature": "",  # empty: the first feature that can embed text
    "weights_dir": "",  # local model weights for text encoders (never downloaded)
    "world_frame": "map",
    "min_score": 0.0,  # 0: m3_core's default grounding threshold
    "max_results": 5,
    "max_render_pixels": 1280 * 960,
    "cloud_max_points": 50_000,
    "cloud_color": "rgb",  # rgb | relevancy (recoloured after each GroundObject)
    "autostart": True,  # configure + activate at start-up (no lifecycle manager needed)
}


class MemoryServer(LifecycleNode):
    def __init__(self) -> None:
        super().__init__("memory_server")
        for name, default in PARAMS.items():
            self.declare_parameter(name, default)
        self.predictor = None
        self.active = False
        latched = QoSProfile(depth=1, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
        self.marker_pub = self.create_publisher(MarkerArray, "~/grounded_markers", latched)
        self.cloud_pub = self.create_publisher(PointCloud2, "~/gaussians", latched)
        render_group, query_group = (
            MutuallyExclusiveCallbackGroup(),
            MutuallyExclusiveCallbackGroup(),
        )
        self.create_service(QueryText, "~/query_text", self.on_query, callback_group=query_group)
        self.create_service(
            GroundObject, "~/ground_object", self.on_ground, callback_group=query_group
        )
        self.create_service(
            RenderFeatureAt, "~/render_feature_at", self.on_render, callback_group=render_group
        )
        self.create_service(
            LoadMemory,
            "~/load_memory",
            self.on_load,
            callback_group=MutuallyExclusiveCallbackGroup(),
        )
        if self.get_parameter("autostart").value:
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
        self.get_logger().info(f"loaded memory {path}: {n} Gaussians")

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        path = self.p("memory_path")
        if not path:
            self.get_logger().warning("no memory_path yet: call ~/load_memory when one is trained")
            return TransitionCallbackReturn.SUCCESS
        try:
            self._load(path)
        except M3Error as exc:
            self.get_logger().error(f"cannot load memory: {exc}")
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        self.active = True
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self.active = False
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
    @guarded_service
    def on_load(self, req: LoadMemory.Request, res: LoadMemory.Response):
        self._load(req.path)
        if not self.active:
            self.active = True  # a memory arriving later activates an autostarted server
        res.success, res.num_gaussians = True, self.predictor.memory.num_gaussians
        res.message = f"loaded {req.path}"
        return res

    @guarded_service
    def on_ground(self, req: GroundObject.Request, res: GroundObject.Response):
        pred = self.ready()
        objects = pred.ground(
            req.text,
            feature=req.feature or self.p("default_feature") or None,
            min_score=req.min_score or self.p("min_score") or None,
            max_results=req.max_results or self.p("max_results"),
        )
        frame, stamp = self.p("world_frame"), self.get_clock().now().to_msg()
        res.objects = [
            convert.grounded_object_msg(o, frame, stamp, GroundedObject) for o in objects
        ]
        res.success, res.message = True, f"{len(objects)} object(s) for {req.text!r}"
        self.marker_pub.publish(markers.grounded_markers(objects, frame, stamp))
        if self.p("cloud_color") == "relevancy":
            feature = req.feature or self.p("default_feature") or None
            self._publish_cloud(pred, pred.relevancy(req.text, feature))
        return res

    def _publish_cloud(self, pred, relevancy=None) -> None:
        pts, rgb = pred.gaussian_cloud(self.p("cloud_max_points"), relevancy)
        stamp = self.get_clock().now().to_msg()
        self.cloud_pub.publish(convert.cloud_msg(pts, self.p("world_frame"), stamp, rgb))

    @guarded_service
    def on_query(self, req: QueryText.Request, res: QueryText.Response):
        pred = self.ready()
        feature = req.feature or self.p("default_feature") or None
        camera = self._camera(req.camera_pose, req.camera_info) if req.render_relevancy else None
        pts, scores = pred.top_points(req.text, feature=feature, k=req.top_k or 10)
        image = pred.relevancy_image(req.text, camera, feature=feature) if camera else None
        res.frame_id = self.p("world_frame")
        res.points = [convert.point_msg(p) for p in pts]
        res.scores = [float(s) for s in scores]
        if image is not None:
            res.relevancy = convert.array_to_image(image.astype("float32"), "32FC1")
        res.success, res.message = True, f"{len(pts)} point(s)"
        return res

    @guarded_service
    def on_render(self, req: RenderFeatureAt.Request, res: RenderFeatureAt.Response):
        pred = self.ready()
        camera = self._camera(req.camera_pose, req.camera_info)
        out = pred.render(camera, list(req.features))
        if req.include_rgb:
            res.rgb = convert.array_to_image((out["rgb"] * 255).round().astype("uint8"), "rgb8")
        if req.include_depth:
            res.depth = convert.array_to_image(out["depth"].astype("float32"), "32FC1")
        res.feature_names = list(req.features)
        res.feature_maps = [convert.feature_map_msg(out[n]) for n in req.features]
        res.success, res.message = True, f"rendered {camera.width}x{camera.height}"
        return res

    def _camera(self, pose_msg, info):
        frame, world = pose_msg.header.frame_id, self.p("world_frame")
        if frame and frame != world:
            raise InvalidInputError(f"camera_pose is in {frame!r}; expected {world!r}")
        cap = self.p("max_render_pixels")
        if info.width * info.height > cap:
            raise InvalidInputError(
                f"render of {info.width}x{info.height} exceeds max_render_pixels {cap}"
            )
        return convert.camera_from_info(info, convert.pose_to_matrix(pose_msg.pose))


def main(args: list[str] | None = None) -> int:
    return run_node(MemoryServer, args)


if __name__ == "__main__":
    import sys

    sys.exit(main())
