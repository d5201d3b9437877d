"""Incremental memory (beyond the paper, which is offline only): a trained memory takes new
frames and keeps training, so a robot's memory grows as it explores.

* PSC banks grow by the same greedy rule as Algorithm 1: a new feature joins a bank only if
  nothing already in it is within the model's threshold (``m3_core.memory.extend_psc``).
* New Gaussians are seeded from the new frames' depth where the current memory does not
  explain them: pixels it leaves empty (rendered alpha < ``alpha_threshold``) or where its
  depth disagrees with the measurement by more than ``depth_tolerance`` (relative).
"""

from __future__ import annotations

import torch

from m3_core.train.init import backproject


@torch.no_grad()
def unexplained_points(
    memory, dataset, ids: list[int], *, alpha_threshold=0.5, depth_tolerance=0.1, stride=2
):
    """World points [M, 3] + colours [M, 3] of new-frame pixels the memory does not explain."""
    from m3_core.memory.render import render_gaussians

    pts, cols = [], []
    for i in ids:
        depth = dataset.load_depth(i)
        if depth is None:
            continue
        cam = dataset.frames[i].camera
        out = render_gaussians(
            memory.gaussians, cam, sh_degree=memory.config.sh_degree, with_queries=False
        )
        d = depth.to(out.depth.device)
        unexplained = (out.alpha < alpha_threshold) | ((out.depth - d).abs() > depth_tolerance * d)
        masked = torch.where(unexplained & (d > 0), d, torch.zeros_like(d))
        p, c = backproject(cam, masked.cpu(), dataset.load_image(i), stride)
        pts.append(p)
        cols.append(c)
    if not pts:
        return torch.zeros(0, 3), torch.zeros(0, 3)
    return torch.cat(pts), torch.cat(cols)


def grow_memory(
    memory, dataset, new_ids: list[int], targets: dict, *, max_new: int, generator
) -> dict:
    """Extend the PSC banks and add Gaussians for the frames ``new_ids``; returns stats."""
    from m3_core.memory.psc import collect_features, extend_psc
    from m3_core.splat import init_gaussians

    stats: dict = {"new_frames": len(new_ids), "psc_added": {}}
    device = memory.gaussians["means"].device
    for spec in memory.config.models:
        grids = [targets[spec.name][i].float() for i in new_ids]
        feats = collect_features(grids)
        if feats.shape[0] == 0:
            continue
        bank = memory.banks[spec.name]
        grown, added = extend_psc(bank, feats.to(bank.device, bank.dtype), spec.psc_threshold)
        memory.banks[spec.name] = grown
        stats["psc_added"][spec.name] = int(added.numel())
    points, colors = unexplained_points(memory, dataset, new_ids)
    if len(points) > max_new:
        keep = torch.randperm(len(points), generator=generator)[:max_new]
        points, colors = points[keep], colors[keep]
    stats["gaussians_added"] = int(len(points))
    if len(points):
        cfg = memory.config
        new = init_gaussians(points, colors, cfg.query_dim, cfg.sh_degree, generator=generator)
        for key, old in memory.gaussians.items():
            joined = torch.cat([old.detach(), new[key].detach().to(device, old.dtype)])
            memory.gaussians[key] = torch.nn.Parameter(joined, requires_grad=old.requires_grad)
    return stats
