"""The paper's Table 1 metrics on held-out views: PSNR / SSIM, and per feature the mean
(1 - cos) and per-element MSE between decoded and real features on the feature grid."""

from __future__ import annotations

import torch

from m3_core.train.losses import feature_distance, psnr, ssim


def grid_uv(h: int, w: int, device: torch.device) -> torch.Tensor:
    """Normalised coordinates [h*w, 2] of the cell centres of an h x w grid (raster order)."""
    v, u = torch.meshgrid(
        (torch.arange(h, device=device) + 0.5) / h,
        (torch.arange(w, device=device) + 0.5) / w,
        indexing="ij",
    )
    return torch.stack([u.reshape(-1), v.reshape(-1)], dim=-1)


@torch.no_grad()
def evaluate(memory, dataset, indices: list[int], *, backend: str = "auto") -> dict:
    """Mean metrics over frames ``indices`` (features from the dataset's precomputed store)."""
    from m3_core.data.features import FeatureStore, sample_bilinear
    from m3_core.memory.render import render_gaussians

    device = memory.gaussians["means"].device
    names = list(memory.layout.names)
    stores = {n: FeatureStore(dataset.root, n) for n in names}
    sums: dict[str, float] = {"psnr": 0.0, "ssim": 0.0}
    counts: dict[str, int] = {"psnr": 0}
    for i in indices:
        frame = dataset.frames[i]
        out = render_gaussians(
            memory.gaussians,
            frame.camera,
            sh_degree=memory.config.sh_degree,
            with_queries=bool(names),
            backend=backend,
        )
        gt = dataset.load_image(i).to(device)
        sums["psnr"] += psnr(out.rgb, gt)
        sums["ssim"] += float(ssim(out.rgb.clamp(0, 1), gt))
        counts["psnr"] += 1
        for n in names:
            stem = frame.image_path.stem
            if not stores[n].exists(stem):
                continue
            grid = stores[n].load(stem).to(device)  # [h, w, d]
            uv = grid_uv(grid.shape[0], grid.shape[1], device)
            q = sample_bilinear(out.queries[..., memory.layout.slice(n)], uv)
            cos_d, mse = feature_distance(memory.decode(n, q), grid.reshape(-1, grid.shape[-1]))
            sums[f"{n}/cos_dist"] = sums.get(f"{n}/cos_dist", 0.0) + float(cos_d)
            sums[f"{n}/mse"] = sums.get(f"{n}/mse", 0.0) + float(mse)
            counts[n] = counts.get(n, 0) + 1
    result: dict = {"frames": counts["psnr"]}
    if counts["psnr"]:
        result["psnr"] = sums["psnr"] / counts["psnr"]
        result["ssim"] = sums["ssim"] / counts["psnr"]
    result["features"] = {
        n: {"cos_dist": sums[f"{n}/cos_dist"] / c, "mse": sums[f"{n}/mse"] / c}
        for n, c in counts.items()
        if n != "psnr"
    }
    return result
