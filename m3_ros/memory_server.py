"""Memory server: a lifecycle node answering QueryText / GroundObject / RenderFeatureAt.

Nav2 pattern (map_server): on_configure resolves the settings once, creates the services and
publishers and loads ``memory_path``; on_activate publishes the Gaussians and starts taking
memories from the trainer (``m3_ros.memory_delivery``); on_deactivate stops that; on_cleanup
and on_shutdown free everything. Every callback checks the state: only an active server
answers, and an unconfigured or finalized one has no services at all. ``autostart`` drives
configure + activate (else a lifecycle manager does). Fast queries run in a reentrant group,
renders in their own, loads in a mutually exclusive one, so a render never blocks a
GroundObject; renders run one at a time on a nicer thread (``m3_ros.render_thread``), so that
on busy cores GroundObject comes first, and one past ``max_pending_renders`` is refused at once
(busy) rather than queued. Answers (``m3_ros.memory_services``) and markers / cloud are in the
memory's world frame. Limits and trusted folders are read-only parameters.
"""

from __future__ import annotations

import time

from nav_msgs.msg import OccupancyGrid
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup as Exclusive
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from sensor_msgs.msg import PointCloud2
from visualization_msgs.msg import MarkerArray

from m3_core.errors import InvalidInputError, M3Error
from m3_ros import convert, markers
from m3_ros import memory_services as answers
from m3_ros.cpus import cpu_set, pin_process
from m3_ros.lifecycle_utils import Interfaces, lifecycle_state, require_active
from m3_ros.memory_delivery import MemoryInbox, load_served
from m3_ros.node_utils import CLIENT_DEPTH, declare_params, guarded_service, run_node
from m3_ros.render_thread import RenderThread
from m3_ros.srv import GroundObject, LoadMemory, QueryText, RenderFeatureAt

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE

PARAMS = {
    "memory_path": "",  # memory folder (memory.json + memory.safetensors)
    "device": "auto",
    "default_feature": "",  # empty: the first feature that can embed text
    "weights_dir": "",  # local model weights for text encoders (never downloaded)
    "world_frame": "",  # empty: the frame the memory was recorded in (set: must agree)
    "min_score": 0.0,  # 0: m3_core's default grounding threshold
    "max_results": 5,  # also the most a request may ask for
    "max_render_pixels": 1280 * 960,  # read-only limits: no peer can raise them
    "max_render_bytes": 64_000_000,  # one RenderFeatureAt answer (rgb + depth + feature maps)
    "request_time_budget_s": 10.0,  # a render stops (success=false) past this
    "render_threads": 1,  # kernel threads a render may use (0: all); other cores answer ground
    "render_nice": 10,  # renders run on one thread this much nicer (0-19): ground comes first
    "max_pending_renders": 2,  # renders running or waiting; one more is refused at once (busy)
    "cloud_max_points": 50_000,  # also the most points a QueryText may ask for
    "occupancy_resolution": 0.1,  # ~/occupancy: cells with opaque Gaussians between these
    "occupancy_min_height": 0.1,  # heights above the floor are occupied (the nav bridge
    "occupancy_max_height": 1.5,  # keeps goals off them and on seen floor)
    "occupancy_min_points": 2,  # Gaussians a cell needs to be occupied (floaters are single)
    "cloud_color": "rgb",  # rgb | relevancy (the last grounded objects' Gaussians by score)
    "autostart": True,  # configure + activate at start-up (no lifecycle manager needed)
    "memory_topic": "/trainer/memory",  # memories announced by the trainer; empty: ignore
    "accept_memories_from": [""],  # node names allowed to announce memories; [""]: any
    "memories_dir": "received_memories",  # where memories from other hosts are unpacked
    "load_roots": ["memories"],  # LoadMemory / in-place loads only from these (+ memories_dir)
    "shared_filesystem": True,  # load the trainer's folder in place when visible here
    "executor_threads": 6,
    "cpus": "",  # run on these CPUs only, e.g. "0" (a core of its own: GroundObject p99)
}
READ_ONLY = (
    *("max_results", "max_render_pixels", "max_render_bytes", "request_time_budget_s"),
    *("render_threads", "render_nice", "max_pending_renders"),
    *("cloud_max_points", "accept_memories_from", "memories_dir", "load_roots"),
    *("executor_threads", "cpus"),
)


class MemoryServer(LifecycleNode):
    def __init__(self) -> None:
        super().__init__("memory_server")
        declare_params(self, PARAMS, READ_ONLY)
        self.settings: answers.ServeSettings | None = None
        self.served: answers.Served | None = None  # swapped in one assignment
        self.iface: Interfaces | None = None
        self.inbox: MemoryInbox | None = None
        self.renders: RenderThread | None = None
        self.executor_threads = self.p("executor_threads")  # read by run_node
        if self.p("autostart") and self.trigger_configure() == SUCCESS:
            self.trigger_activate()

    def p(self, name: str):
        return self.get_parameter(name).value

    # -- lifecycle --------------------------------------------------------------------------
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        fast, renders, self.loads = ReentrantCallbackGroup(), ReentrantCallbackGroup(), Exclusive()
        try:
            self.settings = answers.ServeSettings.from_params(self.p)
            pin_process(cpu_set(self.p("cpus")))  # threads started later inherit it
            s = self.settings
            self.renders = RenderThread(s.render_nice, s.render_threads, s.max_pending_renders)
            if self.renders.niced is False:
                self.get_logger().warning("renders run at normal priority (no per-thread nice)")
            self.iface = Interfaces(
                self,
                [
                    (QueryText, "~/query_text", self.on_query, fast),
                    # small replies: the writer keeps as many as a client queues (CLIENT_DEPTH),
                    # so a reply whose first delivery a starved client missed is re-sent
                    (GroundObject, "~/ground_object", self.on_ground, fast, CLIENT_DEPTH),
                    # up to max_render_bytes each: few queued (one render runs at a time)
                    # reentrant: a render past max_pending_renders is refused while others run
                    (RenderFeatureAt, "~/render_feature_at", self.on_render, renders, 8),
                    (LoadMemory, "~/load_memory", self.on_load, self.loads),
                ],
                {
                    "markers": (MarkerArray, "~/grounded_markers"),
                    "cloud": (PointCloud2, "~/gaussians"),
                    "grid": (OccupancyGrid, "~/occupancy"),
                },
            )
            if self.p("memory_path"):  # a local parameter: trusted, any folder
                self._load(self.p("memory_path"), roots=[])
            else:
                self.get_logger().warning("no memory_path: waiting for the trainer or LoadMemory")
        except M3Error as exc:
            self.get_logger().error(f"configure failed: {exc}")
            self._free()
            return FAILURE
        return SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        result = super().on_activate(state)  # enables the lifecycle publishers
        if self.served is not None:
            self._publish_memory(self.served)
        if self.p("memory_topic"):
            self.inbox = MemoryInbox(self, self.p("memory_topic"), self._load, self.loads)
        return result

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._free(keep_interfaces=True)
        return super().on_deactivate(state)

    def _release(self, state: State) -> TransitionCallbackReturn:
        self._free()  # cleanup, shutdown, error: back to nothing answering
        return SUCCESS

    on_cleanup = on_shutdown = on_error = _release

    def _free(self, keep_interfaces: bool = False) -> None:
        if self.inbox is not None:
            self.inbox, inbox = None, self.inbox
            inbox.destroy()
        if not keep_interfaces:
            if self.iface is not None:
                self.iface.free()
            if self.renders is not None:
                self.renders.close()
            self.iface, self.served, self.settings, self.renders = None, None, None, None

    # -- memories ---------------------------------------------------------------------------
    def _load(self, path: str, roots: list[str] | None = None) -> answers.Served:
        roots = [self.p("memories_dir"), *self.p("load_roots")] if roots is None else roots
        served = load_served(path, self.p, roots)  # refused outside roots (unless trusted)
        self.served = served  # in-flight requests keep the memory they started with
        if lifecycle_state(self) == "active":
            self._publish_memory(served)
        n = served.predictor.memory.num_gaussians
        self.get_logger().info(f"loaded memory {served.path}: {n} Gaussians in {served.frame}")
        return served

    def _publish_memory(self, served: answers.Served, relevancy=None) -> None:
        pts, rgb = served.predictor.gaussian_cloud(self.settings.cloud_max_points, relevancy)
        stamp = self.get_clock().now().to_msg()
        self.iface.publish("cloud", convert.cloud_msg(pts, served.frame, stamp, rgb))
        if served.grid is not None and relevancy is None:  # once per memory (latched)
            self.iface.publish(
                "grid", convert.occupancy_grid_msg(served.grid, served.frame, stamp)
            )

    def ready(self) -> tuple[answers.Served, answers.ServeSettings]:
        require_active(self)
        served, settings = self.served, self.settings
        if served is None or settings is None:
            raise InvalidInputError("no memory loaded: set memory_path or call ~/load_memory")
        return served, settings

    # -- services ---------------------------------------------------------------------------
    @guarded_service
    def on_load(self, req: LoadMemory.Request, res: LoadMemory.Response):
        require_active(self)
        served = self._load(req.path)
        res.success, res.num_gaussians = True, served.predictor.memory.num_gaussians
        res.message = f"loaded {served.path}"
        return res

    @guarded_service
    def on_ground(self, req: GroundObject.Request, res: GroundObject.Response):
        (served, s), stamp = self.ready(), self.get_clock().now().to_msg()
        res, objects = answers.ground(served, req, res, s, stamp)
        self.iface.publish("markers", markers.grounded_markers(objects, served.frame, stamp))
        if s.cloud_color == "relevancy":  # the answer's Gaussians: no second relevancy pass
            self._publish_memory(served, markers.object_scores(objects, served.predictor))
        return res

    @guarded_service
    def on_query(self, req: QueryText.Request, res: QueryText.Response):
        served, s = self.ready()
        return answers.query(served, req, res, s)

    @guarded_service
    def on_render(self, req: RenderFeatureAt.Request, res: RenderFeatureAt.Response):
        received = time.monotonic()
        (served, s), stamp = self.ready(), self.get_clock().now().to_msg()
        renders = self.renders  # the nicer render thread; this executor thread just waits
        if renders is None:
            raise InvalidInputError("the server is being cleaned up")
        return renders.run(answers.render, served, req, res, s, stamp, received)


def main(args: list[str] | None = None) -> int:
    return run_node(MemoryServer, args)


if __name__ == "__main__":
    import sys

    sys.exit(main())
