"""The demo's report folder: pictures of the memory and a summary of grounding and timings.

* ``map.png``   top-down (world x right, y up, metres): Gaussian centres between 5 cm and
  1.5 m high in their colours, the robot's path and keyframes, true boxes (solid), grounded
  boxes (dashed, with the centre error) and the nav bridge's goals (arrows);
* ``views.png`` per view (one per object): the keyframe, the memory's RGB render there, the
  PCA of the decoded feature map (3 principal components as RGB) and the relevancy of the
  object's name (0 .. 1 colour scale; the map's maximum in the title);
* ``summary.json`` (everything the run measured) and ``summary.md`` (the same, readable).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

MAP_Z = (0.05, 1.5)  # heights shown on the map (no floor, no ceiling)


def pca_rgb(
    features: np.ndarray, mask: np.ndarray | None = None, max_fit: int = 4000
) -> np.ndarray:
    """features [H, W, D] -> [H, W, 3] in [0, 1]: the first 3 principal components (fitted
    on ``mask`` pixels [H, W] bool, default all; at most ``max_fit`` of them, a fixed random
    subset), each min-max scaled over those pixels
    (1st-99th percentile, clipped); pixels outside the mask are 0. Components are
    sign-fixed (largest loading positive), so the colours are deterministic."""
    h, w, d = features.shape
    x = features.reshape(-1, d).astype(np.float64)
    m = np.ones(h * w, bool) if mask is None else np.asarray(mask, bool).reshape(-1)
    out = np.zeros((h * w, 3))
    if m.sum() < 2:
        return out.reshape(h, w, 3)
    fit = x[m]
    if fit.shape[0] > max_fit:  # a fixed subsample bounds the SVD's cost
        fit = fit[np.random.default_rng(0).choice(fit.shape[0], max_fit, replace=False)]
    mean = fit.mean(0)
    _, _, vt = np.linalg.svd(fit - mean, full_matrices=False)  # [k, D]
    comps = vt[:3]
    comps = comps * np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(1)])[:, None]
    proj = (x - mean) @ comps.T  # [HW, k]
    lo, hi = np.percentile(proj[m], 1, axis=0), np.percentile(proj[m], 99, axis=0)
    proj = np.clip((proj - lo) / np.maximum(hi - lo, 1e-12), 0, 1)
    out[:, : proj.shape[1]] = proj
    out[~m] = 0
    return out.reshape(h, w, 3)


def _box(ax, center, size, **kw):
    from matplotlib.patches import Rectangle

    x, y = center[0] - size[0] / 2, center[1] - size[1] / 2
    ax.add_patch(Rectangle((x, y), size[0], size[1], fill=False, **kw))


def draw_map(path: Path, cloud: tuple[np.ndarray, np.ndarray], walk_xy: np.ndarray,
             keyframes_xy: np.ndarray, summary: dict) -> Path:  # fmt: skip
    """The top-down map (module doc)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from m3_core.data.synthetic import ROOM

    pts, rgb = cloud
    keep = (pts[:, 2] > MAP_Z[0]) & (pts[:, 2] < MAP_Z[1])
    fig, ax = plt.subplots(figsize=(9, 7.5))
    ax.scatter(pts[keep, 0], pts[keep, 1], c=rgb[keep], s=4, alpha=0.8, linewidths=0)
    _box(ax, ROOM.center, ROOM.size, color="0.3", lw=1.5)
    ax.plot(walk_xy[:, 0], walk_xy[:, 1], "-", color="tab:blue", lw=1, label="robot path")
    ax.plot(keyframes_xy[:, 0], keyframes_xy[:, 1], "o", color="tab:blue", ms=3,
            label="keyframes")  # fmt: skip
    colours = plt.get_cmap("tab10")
    for i, t in enumerate(summary["truth"]):
        c = colours(i + 1)
        _box(ax, t["center"], t["size"], color=c, lw=2)
        ax.text(t["center"][0], t["center"][1] + t["size"][1] / 2 + 0.08, t["label"],
                ha="center", color=c, fontsize=9, weight="bold")  # fmt: skip
        ans = next((a for a in summary["answers"] if a["query"] == t["label"]), None)
        row = next((r for r in summary["grounding"] if r["query"] == t["label"]), {})
        if ans and ans["objects"]:
            o = ans["objects"][0]
            _box(ax, o["center"], o["size"], color=c, lw=1.5, ls="--")
            ax.plot(*o["center"][:2], "x", color=c, ms=9, mew=2)
            ax.text(o["center"][0], o["center"][1] - 0.18, f"{row.get('to_box_m', 0):.2f} m",
                    ha="center", color=c, fontsize=8)  # fmt: skip
    for g in summary["goals"]:
        if g["goal"] is None:
            continue
        qx, qy, qz, qw = g["goal"]["quat_xyzw"]
        yaw = math.atan2(2 * (qw * qz + qx * qy), 1 - 2 * (qy * qy + qz * qz))
        ax.arrow(g["goal"]["x"], g["goal"]["y"], 0.3 * math.cos(yaw), 0.3 * math.sin(yaw),
                 width=0.03, color="k", length_includes_head=True)  # fmt: skip
    ax.plot([], [], "k>", label="nav goals")
    ax.plot([], [], "k-", label="true box")
    ax.plot([], [], "k--", label="grounded box (x: centre)")
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    hits, n = summary.get("hits", 0), summary.get("present", 0)
    ax.set_title(f"Memory map: {n} objects, {hits} grounded within 0.3 m of their box "
                 f"({summary.get('num_gaussians', 0)} Gaussians)")  # fmt: skip
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=5, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pick_views(cameras: list, truth: list[dict], max_views: int = 3) -> list[tuple[int, str]]:
    """(keyframe index, object label) pairs: per object, the view where its centre is in
    front and nearest the image centre (normalised), for up to ``max_views`` objects."""
    picks = []
    for t in truth[:max_views]:
        c = torch.tensor(t["center"] + [1.0], dtype=torch.float64)
        best, best_k = math.inf, None
        for k, cam in enumerate(cameras):
            p = torch.linalg.inv(cam.c2w.double()) @ c
            if p[2] <= 0.3:
                continue
            u, v = cam.fx * p[0] / p[2] / cam.width, cam.fy * p[1] / p[2] / cam.height
            off = float(u * u + v * v) + 0.05 * float(p[2])
            if off < best:
                best, best_k = off, k
        if best_k is not None:
            picks.append((best_k, t["label"]))
    return picks


def draw_views(path: Path, predictor, dataset, feature: str, picks, width: int = 160) -> Path:
    """views.png (module doc); memory renders at ``width`` pixels wide (cost: the decoded
    feature map is [H, W, D])."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(1, len(picks))
    fig, axes = plt.subplots(rows, 4, figsize=(13, 2.8 * rows + 0.4), squeeze=False)
    for r, (k, label) in enumerate(picks):
        cam = dataset.frames[k].camera
        real = dataset.load_image(k).numpy()
        cam = cam.scaled(min(1.0, width / cam.width))
        out = predictor.render(cam, [feature])
        pca = pca_rgb(out[feature], out["alpha"] > 0.5)
        rel = predictor.relevancy_image(label, cam, feature=feature)
        panels = [(real, "keyframe"), (out["rgb"], "memory render (RGB)"),
                  (pca, f"PCA of decoded {feature} features")]  # fmt: skip
        for c, (img, title) in enumerate(panels):
            axes[r, c].imshow(np.clip(img, 0, 1))
            axes[r, c].set_title(title, fontsize=9)
        im = axes[r, 3].imshow(rel, cmap="turbo", vmin=0.0, vmax=1.0)
        axes[r, 3].set_title(f"relevancy '{label}' (max {rel.max():.3f})", fontsize=9)
        fig.colorbar(im, ax=axes[r, 3], fraction=0.035)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def make_report(report_dir: Path, memory_dir: Path, recording: Path, summary: dict) -> list:
    """Write map.png and views.png for a trained memory and its recording; returns paths."""
    from demo import scene
    from m3_core.data import load_dataset
    from m3_core.query import MemoryPredictor

    report_dir.mkdir(parents=True, exist_ok=True)
    predictor = MemoryPredictor.load(memory_dir, device="cpu")
    dataset = load_dataset(recording, max_size=None)
    cams = [f.camera for f in dataset.frames]
    kf_xy = np.array([c.c2w[:2, 3].numpy() for c in cams]).reshape(-1, 2)
    walk = scene.walk_poses(max(summary["frames"], 2))
    walk_xy = np.array([c[:2, 3].numpy() for c in walk + walk[:1]])
    files = [draw_map(report_dir / "map.png", predictor.gaussian_cloud(30_000), walk_xy, kf_xy,
                      summary)]  # fmt: skip
    feature = summary["features"]
    picks = pick_views(cams, summary["truth"])
    files.append(draw_views(report_dir / "views.png", predictor, dataset, feature, picks))
    summary["views"] = [{"keyframe": dataset.frames[k].name, "query": q} for k, q in picks]
    return files


def write_summary(report_dir: Path, summary: dict) -> tuple[Path, Path]:
    """summary.json and summary.md."""
    from m3_core.io import atomic_write_text

    report_dir.mkdir(parents=True, exist_ok=True)
    j = report_dir / "summary.json"
    atomic_write_text(j, json.dumps(summary, indent=1))
    t = summary["timings_s"]
    lines = [
        "# m3 demo summary",
        "",
        f"Features **{summary['features']}**; {summary['frames']} frames published, "
        f"{summary['keyframes']} keyframes at {summary['image_size'][0]}x"
        f"{summary['image_size'][1]}; {summary['iterations']} training steps on CPU; "
        f"{summary['num_gaussians']} Gaussians; test PSNR {summary['psnr_db']} dB.",
        "",
        "## Grounding (top answer's centre vs the true box; hit = within 0.3 m of the box)",
        "",
        "| query | present | answered | score | to box (m) | to centre (m) | xy to centre (m) "
        "| result |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["grounding"]:
        if r["present"]:
            res = "hit" if r.get("hit") else "miss"
        else:
            res = "correct (no answer)" if r.get("correct") else "wrong (answered)"
        lines.append(
            f"| {r['query']} | {'yes' if r['present'] else 'no'} | "
            f"{'yes' if r['answered'] else 'no'} | {r.get('score', '-')} | "
            f"{r.get('to_box_m', '-')} | {r.get('error_m', '-')} | {r.get('error_xy_m', '-')} "
            f"| {res} |"
        )
    live = summary.get("live")
    if live:
        lines += live_lines(live, summary.get("served", ""))
    lines += ["", "## Timings (s)", "", "| stage | wall time (s) |", "|---|---|"]
    for k, v in t.items():
        if isinstance(v, dict):
            for k2, v2 in v.items():
                lines.append(f"| train: {k2} | {v2} |")
        else:
            lines.append(f"| {k} | {v} |")
    q = summary["query_latency_ms"]
    lines += ["", f"GroundObject round trip: median {q['median']} ms, max {q['max']} ms.", ""]
    lines += ["Goals from the nav bridge:", ""]
    lines += [f"- {g['query']}: {g['status']}" for g in summary["goals"]]
    m = report_dir / "summary.md"
    atomic_write_text(m, "\n".join(lines) + "\n")
    return j, m


def live_lines(live: dict, served: str) -> list[str]:
    """The live-memory section of summary.md: when each object was first seen by the camera
    and first answered within 0.3 m of its box during the walk (seconds from its start)."""
    lines = [
        "",
        f"## Live memory: answers during the walk (the walk took {live['walk_s']} s)",
        "",
        "| query | first seen (s) | first answered (s) | after sighting (s) | to box (m) |",
        "|---|---|---|---|---|",
    ]
    for r in live["objects"]:
        lines.append(
            f"| {r['query']} | {r.get('seen_s', '-')} | {r.get('answered_s', '-')} | "
            f"{r.get('delay_s', '-')} | {r.get('to_box_m', '-')} |"
        )
    lines += [
        "",
        f"Answers for the absent object during the walk: {len(live['absent_answers'])} "
        f"of {live['polls']} GroundObject calls in all. Served after training: {served}.",
    ]
    return lines
