"""The memory server's answers: one request -> one ``MemoryPredictor`` call -> the response.

Plain functions of (served memory, request, response, settings) so the node stays thin; they
raise ``M3Error`` on bad input (``node_utils.guarded_service`` turns that into success=false).
``ServeSettings`` are resolved once when the node is configured; ``Served`` is one loaded
memory with what is derived from it once (its world frame, its occupancy grid), swapped into
the node in one assignment so in-flight requests keep the memory they started with.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields

from m3_core.errors import InvalidInputError
from m3_ros import convert
from m3_ros.msg import GroundedObject
from m3_ros.srv import RenderFeatureAt


@dataclass(frozen=True)
class ServeSettings:
    """The node's serving parameters, checked once at configure."""

    world_frame: str = ""  # empty: the memory's recorded frame
    default_feature: str = ""
    min_score: float = 0.0
    max_results: int = 5
    max_render_pixels: int = 1280 * 960
    max_render_bytes: int = 64_000_000  # rgb + depth + feature maps of one RenderFeatureAt
    request_time_budget_s: float = 10.0
    render_threads: int = 1  # compiled-kernel threads one render may use (0: all)
    render_nice: int = 10  # the render thread's nice increment (0-19)
    max_pending_renders: int = 2  # renders in flight (running or waiting); more: busy at once
    cloud_color: str = "rgb"
    cloud_max_points: int = 50_000

    @classmethod
    def from_params(cls, p) -> ServeSettings:
        s = cls(**{f.name: p(f.name) for f in fields(cls)})
        if not 0.0 <= s.min_score <= 1.0:
            raise InvalidInputError(f"min_score must be in [0, 1], got {s.min_score}")
        for name in (
            "max_results",
            "max_render_pixels",
            "max_render_bytes",
            "max_pending_renders",
            "cloud_max_points",
        ):
            if getattr(s, name) < 1:
                raise InvalidInputError(f"{name} must be >= 1, got {getattr(s, name)}")
        if s.render_threads < 0:
            raise InvalidInputError(f"render_threads must be >= 0, got {s.render_threads}")
        if not 0 <= s.render_nice <= 19:
            raise InvalidInputError(f"render_nice must be in [0, 19], got {s.render_nice}")
        if not s.request_time_budget_s > 0:
            raise InvalidInputError("request_time_budget_s must be > 0")
        if s.cloud_color not in ("rgb", "relevancy"):
            raise InvalidInputError(f"cloud_color must be rgb or relevancy: {s.cloud_color!r}")
        return s


@dataclass(frozen=True)
class Served:
    """One loaded memory and what is derived from it once."""

    predictor: object  # m3_core.query.MemoryPredictor
    frame: str  # world frame of every answer
    path: str
    grid: object = None  # m3_core.navigation.GroundGrid of its occupied ground, or None


def memory_frame(memory, wanted: str) -> str:
    """The frame a memory's answers are in: the one it was recorded in; ``wanted`` (the
    parameter) must agree with it when both are set, and names it when the memory has none."""
    recorded = memory.world_frame
    if wanted and recorded and wanted != recorded:
        raise InvalidInputError(
            f"the memory was recorded in {recorded!r} but world_frame is {wanted!r} "
            "(leave world_frame empty to use the memory's)"
        )
    return recorded or wanted or "map"


class Budget:
    """A request's time budget: ``check(stage)`` raises once ``seconds`` have passed since
    ``start`` (a ``time.monotonic()``; default now)."""

    def __init__(self, seconds: float, start: float | None = None) -> None:
        self.seconds = seconds
        self.start = time.monotonic() if start is None else start

    def check(self, stage: str) -> None:
        spent = time.monotonic() - self.start
        if spent > self.seconds:
            raise InvalidInputError(
                f"request stopped after {spent:.1f} s (at {stage}): over the time budget of "
                f"{self.seconds:g} s; ask for fewer pixels or features, or feature_stride"
            )


def request_camera(pose_msg, info, frame: str, s: ServeSettings):
    """The render camera of a request, refused when in another frame or too large."""
    got = pose_msg.header.frame_id
    if got and got != frame:
        raise InvalidInputError(f"camera_pose is in {got!r}; expected {frame!r}")
    if info.width * info.height > s.max_render_pixels:
        raise InvalidInputError(
            f"render of {info.width}x{info.height} exceeds max_render_pixels {s.max_render_pixels}"
        )
    return convert.camera_from_info(info, convert.pose_to_matrix(pose_msg.pose))


def ground(served: Served, req, res, s: ServeSettings, stamp):
    """GroundObject; returns (response, grounded m3_core objects) for the markers."""
    objects = served.predictor.ground(
        req.text,
        feature=req.feature or s.default_feature or None,
        min_score=req.min_score or s.min_score or None,
        max_results=min(req.max_results or s.max_results, s.max_results),
    )
    res.objects = [
        convert.grounded_object_msg(o, served.frame, stamp, GroundedObject) for o in objects
    ]
    text = req.text if len(req.text) <= 80 else req.text[:77] + "..."
    res.success = True
    res.message = f"{len(objects)} object(s) for {text!r} in memory {served.path}"
    return res, objects


def query(served: Served, req, res, s: ServeSettings):
    """QueryText: the top-k most relevant Gaussians (+ a relevancy image when asked)."""
    pred, feature = served.predictor, req.feature or s.default_feature or None
    camera = None
    if req.render_relevancy:
        camera = request_camera(req.camera_pose, req.camera_info, served.frame, s)
    k = req.top_k or 10
    if k > s.cloud_max_points:
        raise InvalidInputError(f"top_k {k} exceeds {s.cloud_max_points} (cloud_max_points)")
    pts, scores = pred.top_points(req.text, feature=feature, k=k)
    image = pred.relevancy_image(req.text, camera, feature=feature) if camera else None
    res.frame_id = served.frame
    res.points = [convert.point_msg(p) for p in pts]
    res.scores = [float(x) for x in scores]
    if image is not None:
        res.relevancy = convert.array_to_image(image.astype("float32"), "32FC1")
        res.relevancy.header.frame_id = served.frame
    res.success, res.message = True, f"{len(pts)} point(s)"
    return res


def render_plan(memory, req, frame: str, s: ServeSettings):
    """(camera, feature names, stride) of a RenderFeatureAt request, refused before any work
    when a name repeats or is unknown, or the answer would exceed the pixel or byte caps."""
    names = list(req.features)
    if len(set(names)) != len(names):
        raise InvalidInputError("features must not repeat a name")
    specs = {m.name: m for m in memory.config.models}
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise InvalidInputError(
            f"unknown feature(s) {', '.join(map(repr, unknown[:5]))}; this memory has: "
            f"{', '.join(specs) or 'none'}"
        )
    if (mode := req.feature_mode) not in (req.FEATURES_DECODED, req.FEATURES_QUERIES):
        raise InvalidInputError(f"feature_mode must be 0 (decoded) or 1 (queries), not {mode}")
    camera = request_camera(req.camera_pose, req.camera_info, frame, s)
    k = max(int(req.feature_stride), 1)
    h, w = -(-camera.height // k), -(-camera.width // k)
    decoded = req.feature_mode == req.FEATURES_DECODED
    channels = sum(specs[n].dim if decoded else specs[n].query_channels for n in names)
    pixels = camera.width * camera.height
    total = pixels * (3 * req.include_rgb + 4 * req.include_depth) + h * w * channels * 4
    if total > s.max_render_bytes:
        raise InvalidInputError(
            f"the answer would be {total / 1e6:.1f} MB, over max_render_bytes "
            f"({s.max_render_bytes / 1e6:.1f} MB): ask for fewer features, feature_stride, or "
            "feature_mode FEATURES_QUERIES"
        )
    return camera, names, k


def render(served: Served, req, res, s: ServeSettings, stamp, received: float | None = None):
    """RenderFeatureAt: rgb / depth / feature maps at the requested camera. The time budget
    runs from ``received`` (a ``time.monotonic()``: the wait for the render thread counts)."""
    from m3_core.memory.render import render_memory

    budget = Budget(s.request_time_budget_s, received)
    budget.check("start")
    memory = served.predictor.memory
    camera, names, k = render_plan(memory, req, served.frame, s)
    decode = req.feature_mode == RenderFeatureAt.Request.FEATURES_DECODED
    out = render_memory(memory, camera, names, decode=decode, feature_stride=k, check=budget.check)
    out = {n: v.detach().float().cpu().numpy() for n, v in out.items()}
    if req.include_rgb:
        res.rgb = convert.array_to_image((out["rgb"] * 255).round().astype("uint8"), "rgb8")
    if req.include_depth:
        res.depth = convert.array_to_image(out["depth"].astype("float32"), "32FC1")
    for image in (res.rgb, res.depth):
        image.header.frame_id, image.header.stamp = served.frame, stamp
    res.feature_names = names
    res.feature_maps = [convert.feature_map_msg(out[n]) for n in names]
    res.success, res.message = True, f"rendered {camera.width}x{camera.height}"
    return res
