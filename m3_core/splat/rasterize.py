"""``rasterize``: one API mirroring ``gsplat.rasterization`` (gsplat 1.5.3, packed=False).

On CUDA tensors (backend "auto" or "gsplat") the call goes to ``gsplat.rasterization``; on CPU
"numba" (the default) projects, bins and composites in compiled kernels, "torch" is the
pure-torch twin of all three, "dense" the slow float64 reference compositor (torch projection
and binning). ``geometry_backend`` picks projection + binning apart from compositing ("torch"
with backend "numba" is the previous, slower pipeline, kept for benchmarks). Inputs are
activated parameters: quats in any scale (normalised here), scales (not log), opacities in
[0, 1].

Beyond gsplat: ``detach_channels=k`` renders the last k channels of ``colors`` in the same pass
but lets their gradient reach only those colours, never the geometry (means, quats, scales,
opacities): M3's released rasterizer, where the feature loss trains the queries only. On CPU
this is one pass (the kernels split the channels); on CUDA a second gsplat call with detached
geometry. ``check_values=False`` skips the finiteness scan of every input (shapes are always
checked): for a training loop whose parameters were checked when loaded.

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
    detach_channels: int,
    check_values: bool,
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
    d = 3 if sh_degree is not None else colors.shape[-1]
    _check(
        0 <= detach_channels <= d
        and (detach_channels == 0 or (render_mode not in ("D", "ED") and sh_degree is None)),
        f"detach_channels must be in 0..{d} (0 with SH colours or depth-only modes), "
        f"got {detach_channels}",
    )
    if backgrounds is not None:
        _check(
            backgrounds.shape == (c, d),
            f"backgrounds must be [{c}, {d}], got {tuple(backgrounds.shape)}",
        )
    for name, t in (("means", means), ("quats", quats), ("scales", scales),
                    ("opacities", opacities), ("colors", colors), ("viewmats", viewmats),
                    ("Ks", Ks)):  # fmt: skip
        _check(t.is_floating_point(), f"{name} must be a floating-point tensor")
        _check(t.device == means.device, f"{name} is on {t.device}, means on {means.device}")
        if check_values:
            _check(bool(torch.isfinite(t).all()), f"{name} contains NaN or infinite values")


def _add_background(
    render: Tensor, alphas: Tensor, backgrounds: Tensor, render_mode: str, k: int
) -> Tensor:
    """render + (1 - alpha) bg; the last k colour channels see a detached alpha."""
    bg = backgrounds  # [C, D]
    if render_mode in ("D", "ED"):
        return render
    d = bg.shape[-1]
    out = render[..., :d] + (1.0 - alphas) * bg[:, None, None, :]
    if k:
        rest = render[..., d - k : d] + (1.0 - alphas.detach()) * bg[:, None, None, d - k :]
        out = torch.cat([out[..., : d - k], rest], dim=-1)
    return torch.cat([out, render[..., d:]], dim=-1)


def _gsplat(
    means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
    viewmats: Tensor, Ks: Tensor, width: int, height: int, k: int, *,
    backgrounds: Tensor | None, **kw: Any,
) -> tuple[Tensor, Tensor, dict[str, Any]]:  # fmt: skip
    """gsplat.rasterization; the last k colour channels (k > 0) in a second call with
    detached geometry (unverified here: this project's machines have no GPU)."""
    import gsplat

    d, bg = colors.shape[-1], backgrounds
    render, alphas, meta = gsplat.rasterization(
        means, quats, scales, opacities, colors[..., : d - k], viewmats, Ks, width, height,
        backgrounds=None if bg is None else bg[..., : d - k], packed=False, **kw,
    )  # fmt: skip
    if k:
        rest, _, _ = gsplat.rasterization(
            means.detach(), quats.detach(), scales.detach(), opacities.detach(),
            colors[..., d - k :], viewmats, Ks, width, height,
            backgrounds=None if bg is None else bg[..., d - k :], packed=False,
            **{**kw, "render_mode": "RGB"},
        )  # fmt: skip
        render = torch.cat([render[..., : d - k], rest, render[..., d - k :]], dim=-1)
    meta["backend"] = "gsplat"
    return render, alphas, meta


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
    detach_channels: int = 0,
    check_values: bool = True,
    geometry_backend: str = "auto",
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Render C images -> (colors [C, H, W, D(+1)], alphas [C, H, W, 1], meta).

    Like gsplat: "D" renders accumulated depth sum(w z), "ED" expected depth sum(w z) / alpha;
    "RGB+D"/"RGB+ED" append it as the last channel; with ``sh_degree`` colours are
    max(eval_sh(dirs) + 0.5, 0) with dirs from the camera centre to the means. No background
    unless ``backgrounds`` is given (then colour += (1 - alpha) * background).
    Raises InvalidInputError on malformed shapes or (``check_values``) non-finite inputs.
    """
    k = int(detach_channels)
    _validate(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree,
        render_mode, backgrounds, tile_size, backend, k, check_values,
    )  # fmt: skip
    _check(geometry_backend in ("auto", "numba", "torch"), "geometry_backend: auto|numba|torch")
    width, height = int(width), int(height)
    if backend == "gsplat" or (backend == "auto" and means.is_cuda):
        return _gsplat(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height, k,
            near_plane=near_plane, far_plane=far_plane, sh_degree=sh_degree,
            render_mode=render_mode, backgrounds=backgrounds, tile_size=tile_size,
            eps2d=eps2d, radius_clip=radius_clip,
        )  # fmt: skip
    if backend == "auto":
        backend = "numba"
    if geometry_backend == "auto":
        geometry_backend = "numba" if backend == "numba" else "torch"

    n_cam, n = viewmats.shape[0], means.shape[0]
    proj = project_gaussians(
        means, quats, scales, opacities, viewmats, Ks, width, height,
        near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, radius_clip=radius_clip,
        backend=geometry_backend,
    )  # fmt: skip
    if sh_degree is None:
        feats = colors if colors.dim() == 3 else colors[None].expand(n_cam, -1, -1)
    else:
        campos = torch.linalg.inv(viewmats)[:, :3, 3]  # [C, 3]
        dirs = means[None] - campos[:, None]  # [C, N, 3]
        shs = colors if colors.dim() == 4 else colors[None].expand(n_cam, -1, -1, -1)
        feats = torch.clamp_min(eval_sh(sh_degree, shs, dirs) + 0.5, 0.0)  # [C, N, 3]
    g = feats.shape[-1] - k  # colour channels that move the geometry
    if render_mode in ("RGB+D", "RGB+ED"):  # depth joins the geometry channels: [g, z, k]
        z = proj.depths[..., None].to(feats.dtype)
        feats = torch.cat([feats[..., :g], z, feats[..., g:]], dim=-1)
        g += 1
    elif render_mode in ("D", "ED"):
        feats = proj.depths[..., None].to(feats.dtype)
        g = 1
    opac = opacities[None].expand(n_cam, n)  # [C, N]

    bins = bin_gaussians(
        proj.means2d, proj.radii, proj.depths, width, height, tile_size, backend=geometry_backend
    )
    render, alphas = composite(
        proj.means2d, proj.conics, opac, feats, bins, proj.radii, proj.depths, width, height,
        backend, n_geo=g,
    )  # fmt: skip
    if k and render_mode in ("RGB+D", "RGB+ED"):  # back to gsplat's order [colours, z]
        render = torch.cat([render[..., : g - 1], render[..., g:], render[..., g - 1 : g]], -1)
    if render_mode in ("ED", "RGB+ED"):
        render = torch.cat([render[..., :-1], render[..., -1:] / alphas.clamp(min=1e-10)], -1)
    if backgrounds is not None:
        render = _add_background(render, alphas, backgrounds, render_mode, k)

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
