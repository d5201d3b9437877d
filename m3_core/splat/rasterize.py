"""``rasterize``: one API mirroring ``gsplat.rasterization`` (gsplat 1.5.3, packed=False).

On CUDA tensors (backend "auto" or "gsplat") the call goes to ``gsplat.rasterization``; on CPU
the projection is differentiable torch (``projection.py``), tiles are binned in torch
(``tiles.py``) and compositing runs in a compiled numba kernel ("numba", the default on CPU) or
its pure-torch twin ("torch"); "dense" is the slow float64 reference. Inputs are activated
parameters: quats in any scale (normalised here), scales (not log), opacities in [0, 1].

``meta`` follows gsplat's unpacked layout so ``gsplat.DefaultStrategy`` works on CPU tensors:
"means2d" [C, N, 2] (a non-leaf on the graph: ``retain_grad()`` gives the screen-space
gradient), "radii" [C, N, 2] int32, "depths" [C, N], "conics" [C, N, 3], "opacities" [C, N],
"width", "height", "n_cameras", "n_batches", "tile_size", "tile_width", "tile_height",
"tiles_per_gauss" [C, N], "flatten_ids", "isect_offsets" [C, th, tw] and
"gaussian_ids" / "camera_ids" / "batch_ids" = None. (No "isect_ids" on CPU.)
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from m3_core.errors import InvalidInputError
from m3_core.splat.composite import BACKENDS, composite
from m3_core.splat.projection import project_gaussians
from m3_core.splat.sh import eval_sh, num_sh_bases
from m3_core.splat.tiles import bin_gaussians

RenderMode = Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"]
RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise InvalidInputError(msg)


def _validate(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    sh_degree: int | None,
    render_mode: str,
    backgrounds: Tensor | None,
    tile_size: int,
    backend: str,
) -> None:
    _check(
        means.dim() == 2 and means.shape[1] == 3, f"means must be [N, 3], got {tuple(means.shape)}"
    )
    n = means.shape[0]
    _check(quats.shape == (n, 4), f"quats must be [{n}, 4], got {tuple(quats.shape)}")
    _check(scales.shape == (n, 3), f"scales must be [{n}, 3], got {tuple(scales.shape)}")
    _check(opacities.shape == (n,), f"opacities must be [{n}], got {tuple(opacities.shape)}")
    _check(
        viewmats.dim() == 3 and viewmats.shape[1:] == (4, 4) and viewmats.shape[0] >= 1,
        f"viewmats must be [C, 4, 4], got {tuple(viewmats.shape)}",
    )
    c = viewmats.shape[0]
    _check(Ks.shape == (c, 3, 3), f"Ks must be [{c}, 3, 3], got {tuple(Ks.shape)}")
    _check(
        int(width) > 0 and int(height) > 0, f"image size must be positive, got {width}x{height}"
    )
    _check(tile_size > 0, f"tile_size must be positive, got {tile_size}")
    _check(render_mode in RENDER_MODES, f"render_mode must be one of {RENDER_MODES}")
    _check(backend in ("auto", "gsplat") + BACKENDS, f"unknown backend {backend!r}")
    _check(backend != "gsplat" or means.is_cuda, "backend 'gsplat' needs CUDA tensors")
    if sh_degree is None:
        ok = (colors.dim() == 2 and colors.shape[0] == n) or (
            colors.dim() == 3 and colors.shape[:2] == (c, n)
        )
        _check(ok, f"colors must be [{n}, D] or [{c}, {n}, D], got {tuple(colors.shape)}")
    else:
        _check(0 <= sh_degree <= 3, f"sh_degree must be in 0..3, got {sh_degree}")
        k = num_sh_bases(sh_degree)
        ok = (colors.dim() == 3 and colors.shape[0] == n) or (
            colors.dim() == 4 and colors.shape[:2] == (c, n)
        )
        _check(
            ok and colors.shape[-1] == 3 and colors.shape[-2] >= k,
            f"SH colors must be [{n}, K>={k}, 3] or [{c}, {n}, K, 3], got {tuple(colors.shape)}",
        )
    if backgrounds is not None:
        d = 3 if sh_degree is not None else colors.shape[-1]
        _check(
            backgrounds.shape == (c, d),
            f"backgrounds must be [{c}, {d}], got {tuple(backgrounds.shape)}",
        )
    for name, t in (("means", means), ("quats", quats), ("scales", scales),
                    ("opacities", opacities), ("colors", colors), ("viewmats", viewmats),
                    ("Ks", Ks)):  # fmt: skip
        _check(t.is_floating_point(), f"{name} must be a floating-point tensor")
        _check(bool(torch.isfinite(t).all()), f"{name} contains NaN or infinite values")
        _check(t.device == means.device, f"{name} is on {t.device}, means on {means.device}")


def rasterize(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4] wxyz, unnormalised
    scales: Tensor,  # [N, 3] activated
    opacities: Tensor,  # [N] in [0, 1]
    colors: Tensor,  # [N, D] | [C, N, D] | SH [N, K, 3] | [C, N, K, 3]
    viewmats: Tensor,  # [C, 4, 4] world-to-camera, OpenCV
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    *,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    sh_degree: int | None = None,
    render_mode: RenderMode = "RGB",
    backgrounds: Tensor | None = None,  # [C, D]
    tile_size: int = 16,
    eps2d: float = 0.3,
    radius_clip: float = 0.0,
    backend: str = "auto",
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Render C images -> (colors [C, H, W, D(+1)], alphas [C, H, W, 1], meta).

    Like gsplat: "D" renders accumulated depth sum(w z), "ED" expected depth sum(w z) / alpha;
    "RGB+D"/"RGB+ED" append it as the last channel; with ``sh_degree`` colours are
    max(eval_sh(dirs) + 0.5, 0) with dirs from the camera centre to the means. No background
    unless ``backgrounds`` is given (then colour += (1 - alpha) * background).
    Raises InvalidInputError on malformed shapes or non-finite inputs.
    """
    _validate(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree,
        render_mode, backgrounds, tile_size, backend,
    )  # fmt: skip
    width, height = int(width), int(height)
    if backend == "gsplat" or (backend == "auto" and means.is_cuda):
        import gsplat

        render, alphas, meta = gsplat.rasterization(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height,
            near_plane=near_plane, far_plane=far_plane, sh_degree=sh_degree,
            render_mode=render_mode, backgrounds=backgrounds, tile_size=tile_size,
            eps2d=eps2d, radius_clip=radius_clip, packed=False,
        )  # fmt: skip
        meta["backend"] = "gsplat"
        return render, alphas, meta
    if backend == "auto":
        backend = "numba"

    n_cam, n = viewmats.shape[0], means.shape[0]
    proj = project_gaussians(
        means, quats, scales, opacities, viewmats, Ks, width, height,
        near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, radius_clip=radius_clip,
    )  # fmt: skip
    if sh_degree is None:
        feats = colors if colors.dim() == 3 else colors[None].expand(n_cam, -1, -1)
    else:
        campos = torch.linalg.inv(viewmats)[:, :3, 3]  # [C, 3]
        dirs = means[None] - campos[:, None]  # [C, N, 3]
        shs = colors if colors.dim() == 4 else colors[None].expand(n_cam, -1, -1, -1)
        feats = torch.clamp_min(eval_sh(sh_degree, shs, dirs) + 0.5, 0.0)  # [C, N, 3]
    if render_mode in ("RGB+D", "RGB+ED"):
        feats = torch.cat([feats, proj.depths[..., None].to(feats.dtype)], dim=-1)
    elif render_mode in ("D", "ED"):
        feats = proj.depths[..., None].to(feats.dtype)
    opac = opacities[None].expand(n_cam, n)  # [C, N]

    bins = bin_gaussians(proj.means2d, proj.radii, proj.depths, width, height, tile_size)
    render, alphas = composite(
        proj.means2d, proj.conics, opac, feats, bins, proj.radii, proj.depths, width, height,
        backend,
    )  # fmt: skip
    if render_mode in ("ED", "RGB+ED"):
        render = torch.cat([render[..., :-1], render[..., -1:] / alphas.clamp(min=1e-10)], -1)
    if backgrounds is not None:
        bg = backgrounds
        if render_mode in ("RGB+D", "RGB+ED"):
            bg = torch.cat([bg, torch.zeros_like(bg[:, :1])], dim=-1)
        elif render_mode in ("D", "ED"):
            bg = torch.zeros_like(bg[:, :1])
        render = render + (1.0 - alphas) * bg[:, None, None, :]

    meta: dict[str, Any] = {
        "batch_ids": None,
        "camera_ids": None,
        "gaussian_ids": None,
        "radii": proj.radii,
        "means2d": proj.means2d,
        "depths": proj.depths,
        "conics": proj.conics,
        "opacities": opac,
        "tile_width": bins.tiles_x,
        "tile_height": bins.tiles_y,
        "tiles_per_gauss": bins.tiles_per_gauss,
        "flatten_ids": bins.flatten_ids,
        "isect_offsets": bins.offsets[:-1].reshape(n_cam, bins.tiles_y, bins.tiles_x).int(),
        "width": width,
        "height": height,
        "tile_size": tile_size,
        "n_batches": 1,
        "n_cameras": n_cam,
        "backend": backend,
    }
    return render, alphas, meta
