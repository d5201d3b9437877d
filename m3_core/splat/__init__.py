"""Gaussian splatting for M3: parameters, spherical harmonics, rasterization, PLY I/O.

``rasterize`` mirrors ``gsplat.rasterization``: gsplat on CUDA tensors, a compiled numba tile
kernel (with a pure-torch twin and a dense float64 reference) on CPU.
"""

from m3_core.splat.gaussians import (
    PARAM_KEYS,
    activated,
    init_gaussians,
    knn_mean_distance,
    random_points,
    sh_coeffs,
)
from m3_core.splat.ply import load_ply, save_ply
from m3_core.splat.projection import Projection, project_gaussians
from m3_core.splat.rasterize import RENDER_MODES, rasterize
from m3_core.splat.sh import eval_sh, rgb_to_sh, sh_to_rgb

__all__ = [
    "PARAM_KEYS",
    "RENDER_MODES",
    "Projection",
    "activated",
    "eval_sh",
    "init_gaussians",
    "knn_mean_distance",
    "load_ply",
    "project_gaussians",
    "random_points",
    "rasterize",
    "rgb_to_sh",
    "save_ply",
    "sh_coeffs",
    "sh_to_rgb",
]
