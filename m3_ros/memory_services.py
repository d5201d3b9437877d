"""The memory server's answers: one request -> one ``MemoryPredictor`` call -> the response.

Plain functions of (predictor, request, response, settings) so the node stays thin; they raise
``M3Error`` on bad input (``node_utils.guarded_service`` turns that into success=false).
"""

from __future__ import annotations

from dataclasses import dataclass

from m3_core.errors import InvalidInputError
from m3_ros import convert
from m3_ros.msg import GroundedObject


@dataclass
class ServeSettings:
    world_frame: str = "map"
    default_feature: str = ""
    min_score: float = 0.0
    max_results: int = 5
    max_render_pixels: int = 1280 * 960


def request_camera(pose_msg, info, s: ServeSettings):
    """The render camera of a request, refused when in another frame or too large."""
    frame = pose_msg.header.frame_id
    if frame and frame != s.world_frame:
        raise InvalidInputError(f"camera_pose is in {frame!r}; expected {s.world_frame!r}")
    if info.width * info.height > s.max_render_pixels:
        raise InvalidInputError(
            f"render of {info.width}x{info.height} exceeds max_render_pixels {s.max_render_pixels}"
        )
    return convert.camera_from_info(info, convert.pose_to_matrix(pose_msg.pose))


def ground(pred, req, res, s: ServeSettings, stamp):
    """GroundObject; returns (response, grounded m3_core objects) for the markers."""
    objects = pred.ground(
        req.text,
        feature=req.feature or s.default_feature or None,
        min_score=req.min_score or s.min_score or None,
        max_results=req.max_results or s.max_results,
    )
    res.objects = [
        convert.grounded_object_msg(o, s.world_frame, stamp, GroundedObject) for o in objects
    ]
    res.success, res.message = True, f"{len(objects)} object(s) for {req.text!r}"
    return res, objects


def query(pred, req, res, s: ServeSettings):
    """QueryText: the top-k most relevant Gaussians (+ a relevancy image when asked)."""
    feature = req.feature or s.default_feature or None
    camera = request_camera(req.camera_pose, req.camera_info, s) if req.render_relevancy else None
    pts, scores = pred.top_points(req.text, feature=feature, k=req.top_k or 10)
    image = pred.relevancy_image(req.text, camera, feature=feature) if camera else None
    res.frame_id = s.world_frame
    res.points = [convert.point_msg(p) for p in pts]
    res.scores = [float(x) for x in scores]
    if image is not None:
        res.relevancy = convert.array_to_image(image.astype("float32"), "32FC1")
    res.success, res.message = True, f"{len(pts)} point(s)"
    return res


def render(pred, req, res, s: ServeSettings):
    """RenderFeatureAt: rgb / depth / decoded feature maps at the requested camera."""
    camera = request_camera(req.camera_pose, req.camera_info, s)
    out = pred.render(camera, list(req.features))
    if req.include_rgb:
        res.rgb = convert.array_to_image((out["rgb"] * 255).round().astype("uint8"), "rgb8")
    if req.include_depth:
        res.depth = convert.array_to_image(out["depth"].astype("float32"), "32FC1")
    res.feature_names = list(req.features)
    res.feature_maps = [convert.feature_map_msg(out[n]) for n in req.features]
    res.success, res.message = True, f"rendered {camera.width}x{camera.height}"
    return res
