"""Scale sweeps (issue 17 part 2): training ms/step, serving latency, RAM and bytes on disk
as the Gaussians, the image size, the feature dim and the number of models grow.

Synthetic memories, no training data: ``N`` Gaussians fill a 6 x 5 x 2.5 m room (half spread
uniformly, scales ~ the mean spacing (75 m^3 / N)^(1/3), so the room is equally "full" at any
N; half in 32 object blobs of 0.25 m), SH degree 1 (the CPU schedule's), 16 query channels per
model, each model a random PSC bank of ``--bank-rows`` rows of ``dim`` and a random N(0, 1)
projection. Cameras stand inside the room looking at it (focal 0.8 x width).

Per configuration, serving and training each in its own child process under a hard
address-space limit (``RLIMIT_AS``, ``--rlimit-gb``), so that a part that runs out of memory
fails alone ("serve breaks: out of memory at <phase>"), never wakes the kernel's OOM killer,
and leaves the other part measured. The limit counts address space, not resident memory:
torch, numba and scipy map ~3 GB more than they touch (peak VmPeak - RSS in the JSON), and a
4 GB limit fails at ``import scipy``:

* **serving** (what the memory server does per request, no grounding index: grounding then
  decodes each Gaussian's own query, as a memory without one is served):
  ``cache s`` = the one-off ``MemoryPredictor.prepare`` (GMA-decode all N Gaussians + the
  relevancy scorer), then medians over ``--queries`` requests of ``ground`` (closed
  vocabulary of the 32 objects' decoded features + 8 random absent labels: the per-query
  relevancy mat-vec over all Gaussians + clustering), ``relevancy_image`` (render, decode
  every pixel, score) and ``render`` (``MemoryPredictor.render`` of the first feature: the
  RenderFeatureAt work), both at the configuration's image size (320x240 except in the
  image-size sweep);
* **training** ms/step: the trainer's own step (``Trainer._draw`` / ``Trainer._step_loss``:
  render RGB + depth + queries, L1 + SSIM, depth L1, point-sampled GMA feature loss per model;
  then gsplat's densification bookkeeping, backward, fused Adam on every parameter and W_m),
  with ``TrainConfig.sized_for("cpu", ...)`` (the CPU default), random target images, depths
  and feature grids (``dim`` at 1/8 of the image, float16); median of ``--steps`` steps after
  ``--warmup``. Wall time; process CPU time alongside;
* **RAM**: peak resident set (``ru_maxrss``) of each child: "serve" is what a memory server
  holds (imports, memory, decoded-feature cache, per-request buffers), "train" the trainer
  (memory, gradients, Adam state, render buffers) and the save;
* **bytes**: ``Memory.save`` into a temp folder, the folder's size.

Sweeps (one table each): Gaussians (10k .. 1M, then 2M and 3M to find where it breaks),
image size (at 100k), feature dim and number of models (at 100k, 320x240). The base
configuration is shared between the sweeps and measured once. "breaks" is at the address-space
limit, not at the machine's RAM: the last table projects the Gaussians at which the peak would
reach ``--ram-gb`` (24) from the measured per-Gaussian slope.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_scale.py [--quick] [--threads 1]
        [--rlimit-gb 9] [--sweeps gaussians,image,dim,models] [--json OUT] [--plot OUT.png]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from scale_child import CHANNELS, RESULT, Config, child

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("serve", "train")  # one child process each: one breaking leaves the other measured
OOM_SIGNS = ("MemoryError", "not enough memory", "can't allocate", "std::bad_alloc",
             "Cannot allocate memory", "failed to map segment")  # fmt: skip


def run_child(cfg: Config, args, part: str) -> dict:
    """Run ``part`` of ``cfg`` in a child process under the address-space limit."""
    limit = int(args.rlimit_gb * 2**30)

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(ROOT)}
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = str(args.threads)
    cmd = [sys.executable, __file__, "--child", json.dumps(asdict(cfg)), "--part", part,
           "--threads", str(args.threads), "--bank-rows", str(args.bank_rows),
           "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--queries", str(args.queries)]  # fmt: skip
    t = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, env=env, preexec_fn=limit_memory, capture_output=True, text=True,
            timeout=args.timeout, cwd=ROOT,
        )  # fmt: skip
        out, err, rc = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:  # subprocess.run killed the child
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        err, rc = f"timed out after {args.timeout:.0f} s", None
    lines = [ln[len(RESULT) :] for ln in out.splitlines() if ln.startswith(RESULT)]
    res = json.loads(lines[-1]) if lines else {f"{part}_phase": "start"}
    res[f"{part}_wall_s"] = time.perf_counter() - t
    if res[f"{part}_phase"] != "done" or rc != 0:
        oom = any(s in (err or "") for s in OOM_SIGNS)
        why = "out of memory" if oom else "timed out" if rc is None else f"failed (exit {rc})"
        res[f"{part}_status"] = f"{part} breaks: {why} at {res[f'{part}_phase']}"
        tail = (err or "").strip().splitlines()[-3:]
        res[f"{part}_error"] = " | ".join(tail)[-400:]
    return res


def run_config(cfg: Config, args) -> dict:
    """Both parts of ``cfg``, each in its own child; the merged result row."""
    row: dict = asdict(cfg)
    for part in PARTS:
        row.update(run_child(cfg, args, part))
    broke = [row[f"{p}_status"] for p in PARTS if f"{p}_status" in row]
    row["status"] = "; ".join(broke) or "ok"
    rss = [row[f"{p}_rss_mb"] for p in PARTS if f"{p}_rss_mb" in row]
    if len(rss) == len(PARTS):
        row["peak_rss_mb"] = max(rss)
    row["wall_s"] = sum(row[f"{p}_wall_s"] for p in PARTS)
    row["error"] = " / ".join(row[f"{p}_error"] for p in PARTS if f"{p}_error" in row)
    return row


COLS = [  # (header, key, format)
    ("train ms/step", "train_ms", "{:.0f}"),
    ("train cpu ms", "train_cpu_ms", "{:.0f}"),
    ("cache s", "cache_s", "{:.2f}"),
    ("ground cpu ms", "ground_cpu_ms", "{:.1f}"),
    ("rel. image cpu ms", "image_cpu_ms", "{:.0f}"),
    ("render cpu ms", "render_cpu_ms", "{:.0f}"),
    ("serve RAM MB", "serve_rss_mb", "{:.0f}"),
    ("train RAM MB", "train_rss_mb", "{:.0f}"),
    ("disk MB", "disk_bytes", "{:.1f}"),
    ("B/Gaussian", "bytes_per_gaussian", "{:.0f}"),
]


def cell(row: dict, key: str, fmt: str) -> str:
    v = row.get(key)
    if v is None:
        return "-"
    return fmt.format(v / 2**20 if key == "disk_bytes" else v)


def print_table(title: str, what: str, rows: list[dict], values: list) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join([what] + [c[0] for c in COLS] + ["status"]) + " |")
    print("|" + "---|" * (len(COLS) + 2))
    for v, r in zip(values, rows):
        print("| " + " | ".join([str(v)] + [cell(r, k, f) for _, k, f in COLS]
                                + [r["status"]]) + " |", flush=True)  # fmt: skip


def sweeps(args) -> dict[str, tuple[str, list, list[Config]]]:
    """name -> (column title, swept values, configurations)."""
    bw, bh = (int(x) for x in args.base_size.split("x"))
    base = Config(args.base_gaussians, bw, bh, args.base_dim)
    sizes = [tuple(int(x) for x in s.split("x")) for s in args.sizes.split(",")]
    out = {
        "gaussians": ("Gaussians", args.gaussians,
                      [Config(n, bw, bh, base.dim) for n in args.gaussians]),
        "image": (f"image (N={base.gaussians})", [f"{w}x{h}" for w, h in sizes],
                  [Config(base.gaussians, w, h, base.dim) for w, h in sizes]),
        "dim": (f"feature dim (N={base.gaussians})", args.dims,
                [Config(base.gaussians, bw, bh, d) for d in args.dims]),
        "models": (f"models (N={base.gaussians})", args.models,
                   [Config(base.gaussians, bw, bh, base.dim, m) for m in args.models]),
    }  # fmt: skip
    return {k: out[k] for k in args.sweeps.split(",")}


def project_break(rows: list[dict], ram_gb: float) -> list[str]:
    """Per part: the Gaussians at which its peak RSS would reach ``ram_gb``, extrapolated
    linearly from its two largest finished configurations."""
    lines = []
    for part in PARTS:
        key = f"{part}_rss_mb"
        ok = sorted((r for r in rows if key in r), key=lambda r: r["gaussians"])
        if len(ok) < 2:
            lines.append(f"{part}: fewer than 2 finished configurations, no projection")
            continue
        a, b = ok[-2], ok[-1]
        slope = (b[key] - a[key]) / (b["gaussians"] - a["gaussians"])  # MB per Gaussian
        if slope <= 0:
            lines.append(f"{part}: peak RAM did not grow with N")
            continue
        n = b["gaussians"] + (ram_gb * 1024 - b[key]) / slope
        lines.append(
            f"{part}: {slope * 2**20:.0f} B of peak RAM per Gaussian between {a['gaussians']} "
            f"and {b['gaussians']}: {ram_gb:g} GB reached at ~{n / 1e6:.1f}M Gaussians"
        )
    return lines


def short(v) -> str:
    """10000 -> "10k", 1000000 -> "1M"; other values as they are."""
    if isinstance(v, int) and v >= 1000:
        return f"{v / 1e6:g}M" if v >= 1_000_000 else f"{v / 1e3:g}k"
    return str(v)


def plot(results: dict, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib not importable: no plot written to {path}")
        return
    names = list(results)
    fig, axes = plt.subplots(len(names), 3, figsize=(13, 3.2 * len(names)), squeeze=False)
    for ax_row, name in zip(axes, names):
        what, values, rows = results[name]["title"], results[name]["values"], results[name]["rows"]
        x = list(range(len(values)))
        for ax, keys, ylabel in (
            (ax_row[0], ("train_ms", "train_cpu_ms"), "training ms/step"),
            (ax_row[1], ("ground_cpu_ms", "image_cpu_ms", "render_cpu_ms"), "serving CPU ms"),
            (ax_row[2], ("serve_rss_mb", "train_rss_mb", "disk_bytes"), "MB"),
        ):
            for k in keys:
                ys = [(r.get(k) / 2**20 if k == "disk_bytes" else r.get(k))
                      if r.get(k) is not None else float("nan") for r in rows]  # fmt: skip
                ax.plot(x, ys, "o-", label=k)
            ax.set_xticks(x, [short(v) for v in values])
            ax.set_xlabel(what)
            ax.set_ylabel(ylabel)
            ax.set_yscale("log")
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sweeps", default="gaussians,image,dim,models")
    p.add_argument("--gaussians", default="10000,100000,300000,1000000,2000000,3000000")
    p.add_argument("--base-gaussians", type=int, default=100_000)
    p.add_argument("--base-size", default="320x240", help="image size of the other sweeps")
    p.add_argument("--base-dim", type=int, default=512, help="feature dim of the other sweeps")
    p.add_argument("--sizes", default="160x120,320x240,640x480")
    p.add_argument("--dims", default="16,512,1280")
    p.add_argument("--models", default="1,2,3")
    p.add_argument("--bank-rows", type=int, default=1024, help="PSC rows per model")
    p.add_argument("--steps", type=int, default=3, help="measured training steps (median)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--queries", type=int, default=5, help="measured serving requests (median)")
    p.add_argument("--threads", type=int, default=1, help="torch / numba threads")
    p.add_argument("--rlimit-gb", type=float, default=9.0, help="address-space limit per config")
    p.add_argument("--ram-gb", type=float, default=24.0, help="RAM to project the break point to")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per configuration")
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke run)")
    p.add_argument("--json", default=None, help="save the rows here (after every configuration)")
    p.add_argument("--plot", default=None, help="save a PNG of the sweeps here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--part", default="serve", choices=PARTS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(Config(**json.loads(args.child)), args, args.part)
        return 0
    if args.quick:
        args.gaussians, args.base_gaussians = "2000,5000", 2000
        args.sizes, args.dims, args.models = "80x60,160x120", "16,64", "1,2"
        args.base_size, args.base_dim = "80x60", 64
        args.bank_rows, args.steps, args.warmup, args.queries = 64, 2, 1, 3
    args.gaussians = [int(x) for x in args.gaussians.split(",")]
    args.dims = [int(x) for x in args.dims.split(",")]
    args.models = [int(x) for x in args.models.split(",")]
    print(f"threads {args.threads}, address-space limit {args.rlimit_gb:g} GB per configuration, "
          f"PSC bank {args.bank_rows} rows, {CHANNELS} query channels per model, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    todo = sweeps(args)
    seen: dict[Config, dict] = {}
    results: dict = {}
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    total = len({c for _, _, cfgs in todo.values() for c in cfgs})
    bar = tqdm(total=total, desc="configurations", file=sys.stderr) if tqdm else None
    for name, (what, values, cfgs) in todo.items():
        rows = []
        for cfg in cfgs:
            if cfg not in seen:
                if bar:
                    bar.set_postfix_str(cfg.label())
                seen[cfg] = run_config(cfg, args)
                if bar:
                    bar.update()
                r = seen[cfg]
                print(f"{cfg.label()}: {r['status']}, {r['wall_s']:.0f} s"
                      + (f" ({r['error']})" if r["error"] else ""),
                      file=sys.stderr, flush=True)  # fmt: skip
            rows.append(seen[cfg])
            results[name] = {"title": what, "values": values, "rows": rows}
            if args.json:
                Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    if bar:
        bar.close()
    for name, r in results.items():
        print_table(f"{name} sweep", r["title"], r["rows"], r["values"])
    if "gaussians" in results:
        print(f"\nprojected RAM limit ({args.ram_gb:g} GB):")
        for line in project_break(results["gaussians"]["rows"], args.ram_gb):
            print(f"- {line}")
    print(
        f"\nload average at the end {os.getloadavg()[0]:.1f}; wall time is on a shared "
        "machine, process CPU time (train cpu ms) is steadier"
    )
    if args.plot:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
