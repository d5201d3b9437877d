"""Seeding: new Gaussians where a keyframe's depth is not yet explained by the live memory.

Rule (the one of :func:`m3_core.train.incremental.unexplained_points`): a pixel with a depth
measurement d > 0 is *unexplained* when the memory rendered at the keyframe's camera leaves it
empty (alpha < ``alpha_threshold``) or its expected depth disagrees by more than
``depth_tolerance * d``. Pixels on a grid of step ``stride`` that are unexplained are
back-projected (:func:`m3_core.train.init.backproject`), each becoming one isotropic Gaussian:

* scale sigma = ``scale * stride * d / f`` (f = mean focal length), a fraction of the seed
  cell's footprint at that depth: with LiveConfig's 0.4 and opacity 0.9 the alpha between
  four seeds is still > 0.5 (the surface is covered, the same view adds nothing again),
  while a seed's tail over a neighbour's pixel across a depth edge stays small enough for
  that neighbour's expected depth to pass the 10 % test (0.6 re-seeded ~1.4 % of a
  320x240 view every time it was seen again, 0.4: 0.2 %);
* colour = the image at that pixel (SH DC; higher bands 0), opacity ``opacity``;
* identity rotation, query 0 (the queries are fitted after lifting).
"""

from __future__ import annotations

import math

import torch

from m3_core.splat.sh import num_sh_bases, rgb_to_sh
from m3_core.train.init import backproject
from m3_core.types import Camera


@torch.no_grad()
def unexplained_mask(
    gaussians,
    camera: Camera,
    depth: torch.Tensor,  # [H, W] metres, 0 = no measurement
    *,
    sh_degree: int,
    alpha_threshold: float = 0.5,
    depth_tolerance: float = 0.1,
) -> torch.Tensor:  # [H, W] bool
    """Pixels with depth that ``gaussians`` (ParameterDict layout) do not explain (module doc).
    Everything with depth is unexplained when there are no Gaussians yet."""
    valid = depth > 0
    if gaussians is None or gaussians["means"].shape[0] == 0:
        return valid
    from m3_core.memory.render import render_gaussians

    out = render_gaussians(
        gaussians, camera, sh_degree=sh_degree, with_queries=False, check_values=False
    )  # the live memory's own tensors: finite by construction
    d = depth.to(out.depth.device, out.depth.dtype)
    bad = (out.alpha < alpha_threshold) | ((out.depth - d).abs() > depth_tolerance * d)
    return (bad & valid.to(bad.device)).cpu()


def seed_gaussians(
    camera: Camera,
    depth: torch.Tensor,  # [H, W]
    image: torch.Tensor,  # [H, W, 3] in [0, 1]
    mask: torch.Tensor,  # [H, W] bool: pixels to seed from
    *,
    stride: int,
    scale: float,
    opacity: float,
    query_dim: int,
    sh_degree: int,
) -> dict[str, torch.Tensor]:
    """New Gaussians (plain tensors in the ParameterDict layout, float32, CPU) for the masked
    pixels on the ``stride`` grid; zero rows when the mask is empty there."""
    masked = torch.where(mask, depth, torch.zeros_like(depth))
    points, colors = backproject(camera, masked.cpu(), image.cpu(), stride)  # [M, 3] x 2
    z = masked[::stride, ::stride]
    z = z[torch.isfinite(z) & (z > 0)].float()  # [M], same order as backproject's points
    n = points.shape[0]
    f = 0.5 * (camera.fx + camera.fy)
    sigma = (float(scale) * stride / f) * z  # [M] metres
    k = num_sh_bases(sh_degree)
    return {
        "means": points,
        "scales": torch.log(sigma.clamp_min(1e-6))[:, None].repeat(1, 3),
        "quats": torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1),
        "opacities": torch.full((n,), math.log(opacity / (1.0 - opacity))),
        "sh0": rgb_to_sh(colors)[:, None, :],
        "shN": torch.zeros(n, k - 1, 3),
        "queries": torch.zeros(n, query_dim),
    }
