"""Initial Gaussian positions: depth back-projection, else COLMAP points, else random."""

from __future__ import annotations

import torch

from m3_core.types import Camera


def backproject(camera: Camera, depth: torch.Tensor, rgb: torch.Tensor, stride: int = 4):
    """World points [M, 3] and colours [M, 3] of pixels with valid depth, every ``stride``."""
    h, w = depth.shape
    v, u = torch.meshgrid(
        torch.arange(0, h, stride, dtype=torch.float64),
        torch.arange(0, w, stride, dtype=torch.float64),
        indexing="ij",
    )
    d = depth[::stride, ::stride].to(torch.float64)  # [h', w']
    ok = torch.isfinite(d) & (d > 0)
    u, v, d = u[ok] + 0.5, v[ok] + 0.5, d[ok]
    x = (u - camera.cx) / camera.fx * d
    y = (v - camera.cy) / camera.fy * d
    pts_cam = torch.stack([x, y, d, torch.ones_like(d)], dim=-1)  # [M, 4]
    pts = (camera.c2w.to(torch.float64) @ pts_cam.T).T[:, :3]
    cols = rgb[::stride, ::stride][ok]
    return pts.to(torch.float32), cols.to(torch.float32)


def initial_points(dataset, indices: list[int], max_points: int, generator: torch.Generator):
    """(points [N, 3], colours [N, 3] | None, source) for the frames ``indices``."""
    pts, cols = [], []
    for i in indices:
        depth = dataset.load_depth(i)
        if depth is None:
            continue
        cam = dataset.frames[i].camera
        stride = max(1, int((depth.numel() * len(indices) / (4 * max_points)) ** 0.5))
        p, c = backproject(cam, depth, dataset.load_image(i), stride)
        pts.append(p)
        cols.append(c)
    if pts:
        points, colors, source = torch.cat(pts), torch.cat(cols), "depth"
    elif getattr(dataset, "points", None) is not None and len(dataset.points) > 0:
        points = torch.as_tensor(dataset.points, dtype=torch.float32)
        pc = getattr(dataset, "point_colors", None)
        colors = None if pc is None else torch.as_tensor(pc, dtype=torch.float32)
        source = "colmap"
    else:
        lo, hi = dataset.scene_bounds()
        lo, hi = torch.as_tensor(lo, dtype=torch.float32), torch.as_tensor(hi, dtype=torch.float32)
        n = min(max_points, 20_000)
        points = lo + (hi - lo) * torch.rand(n, 3, generator=generator)
        return points, None, "random"
    if len(points) > max_points:
        keep = torch.randperm(len(points), generator=generator)[:max_points]
        points = points[keep]
        colors = None if colors is None else colors[keep]
    return points, colors, source
