"""The child process of ``bench_scale.py``: one part ("serve" or "train") of one
configuration, measured on a synthetic memory (``bench_scale``'s module doc says what each
part measures). It prints a ``RESULT`` JSON line at every phase; the last one tells the parent
where a child that ran out of memory broke."""

from __future__ import annotations

import json
import math
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOM = (6.0, 5.0, 2.5)  # metres
OBJECTS = 32  # object blobs, also the vocabulary's present labels
ABSENT = 8  # random vocabulary entries that match nothing
CHANNELS = 16  # query channels per model
FEATURE_STRIDE = 8  # feature grid = image / 8 (a ViT-like patch grid)
RESULT = "RESULT "  # prefix of the child's result lines on stdout


@dataclass(frozen=True)
class Config:
    gaussians: int
    width: int = 320
    height: int = 240
    dim: int = 512
    models: int = 1

    def label(self) -> str:
        return f"N={self.gaussians} {self.width}x{self.height} d={self.dim} m={self.models}"


def status_kb(field: str) -> int:
    """A kB field of /proc/self/status (0 if absent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def make_cameras(cfg: Config, n: int, seed: int):
    """``n`` cameras inside the room, looking horizontally-ish at random yaws."""
    import torch

    from m3_core.data.synthetic import look_at_c2w
    from m3_core.types import Camera

    g = torch.Generator().manual_seed(seed)
    cams = []
    for _ in range(n):
        r = torch.rand(5, generator=g).tolist()
        pos = (1.5 + 3.0 * r[0], 1.2 + 2.6 * r[1], 1.0 + 0.5 * r[2])
        yaw, pitch = 2 * math.pi * r[3], -0.3 + 0.4 * r[4]
        w, h = cfg.width, cfg.height
        c2w = look_at_c2w(pos, yaw, pitch)
        cams.append(Camera(0.8 * w, 0.8 * w, w / 2, h / 2, w, h, c2w))
    return cams


def make_memory(cfg: Config, bank_rows: int, seed: int):
    """The synthetic memory of ``cfg`` (module doc) and the object queries [OBJECTS, Q]."""
    import torch

    from m3_core.config import MemoryConfig
    from m3_core.memory import Memory
    from m3_core.types import ModelSpec

    g = torch.Generator().manual_seed(seed)
    n, room = cfg.gaussians, torch.tensor(ROOM)
    q_dim = CHANNELS * cfg.models
    n_obj = n // 2
    centres = 0.3 + torch.rand(OBJECTS, 3, generator=g) * (room - 0.6)
    which = torch.randint(0, OBJECTS, (n_obj,), generator=g)
    means = torch.cat([
        centres[which] + 0.25 * (2 * torch.rand(n_obj, 3, generator=g) - 1),
        torch.rand(n - n_obj, 3, generator=g) * room,
    ])  # fmt: skip
    spacing = (room.prod().item() / n) ** (1 / 3)
    scales = torch.log(spacing * (0.3 + 0.7 * torch.rand(n, 3, generator=g)))
    quats = torch.randn(n, 4, generator=g)
    obj_q = torch.randn(OBJECTS + 1, q_dim, generator=g)  # the last: the room's background
    queries = torch.cat([obj_q[which], obj_q[-1].expand(n - n_obj, q_dim)])
    queries = queries + 0.1 * torch.randn(n, q_dim, generator=g)
    params = {
        "means": means,
        "scales": scales,
        "quats": quats / quats.norm(dim=-1, keepdim=True),
        "opacities": torch.logit(0.2 + 0.7 * torch.rand(n, generator=g)),
        "sh0": torch.randn(n, 1, 3, generator=g) * 0.5,
        "shN": torch.randn(n, 3, 3, generator=g) * 0.05,  # SH degree 1
        "queries": queries,
    }
    specs = [ModelSpec(f"model{i}", cfg.dim, CHANNELS, 0.8) for i in range(cfg.models)]
    banks = {s.name: torch.randn(bank_rows, cfg.dim, generator=g) for s in specs}
    mcfg = MemoryConfig(models=specs, sh_degree=1)
    memory = Memory.create(mcfg, params, banks, seed=seed)
    del params, means, scales, quats, queries, which
    return memory, obj_q[:OBJECTS]


def measure_serving(memory, obj_q, cfg: Config, args, res: dict, report) -> None:
    import torch

    from m3_core.query import MemoryPredictor, TextEncoder

    name = memory.layout.names[0]
    with torch.no_grad():
        present = memory.decode(name, obj_q[:, memory.layout.slice(name)])  # [OBJECTS, d]
    absent = torch.randn(ABSENT, cfg.dim, generator=torch.Generator().manual_seed(1))
    emb = torch.cat([present, absent])
    emb = emb / emb.norm(dim=-1, keepdim=True)
    texts = [f"object{i}" for i in range(OBJECTS)] + [f"absent{i}" for i in range(ABSENT)]
    pred = MemoryPredictor(memory, TextEncoder(vocabularies={name: (texts, emb)}))
    report("serve: decode all Gaussians")
    t = time.perf_counter()
    pred.prepare([name])
    res["cache_s"] = time.perf_counter() - t
    queries = [texts[i % OBJECTS] if i % 4 else texts[OBJECTS + i % ABSENT]
               for i in range(args.queries)]  # fmt: skip
    report("serve: ground")
    pred.ground(queries[0])  # first call: lazy imports, kd-tree code paths
    timed(res, "ground", lambda i: pred.ground(queries[i]), args.queries)
    res["objects_per_query"] = statistics.median(len(pred.ground(q)) for q in queries[:4])
    cams = make_cameras(cfg, args.queries, seed=7)
    report("serve: relevancy image")
    pred.relevancy_image(queries[0], cams[0])
    timed(res, "image", lambda i: pred.relevancy_image(queries[i], cams[i]), args.queries)
    report("serve: render")
    timed(res, "render", lambda i: pred.render(cams[i], [name]), args.queries)


def timed(res: dict, key: str, fn, repeats: int) -> None:
    """Median wall and process CPU time of ``fn(i)`` over ``repeats`` calls, in ms, into
    ``res[key + "_ms"]`` and ``res[key + "_cpu_ms"]``."""
    walls, cpus = [], []
    for i in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn(i)
        walls.append((time.perf_counter() - t) * 1e3)
        cpus.append((time.process_time() - c) * 1e3)
    res[f"{key}_ms"], res[f"{key}_cpu_ms"] = statistics.median(walls), statistics.median(cpus)


def measure_training(memory, cfg: Config, args, res: dict, out_dir: Path) -> None:
    """The trainer's step (module doc) on random targets; fills train_ms / train_cpu_ms."""
    from types import SimpleNamespace

    import torch
    from gsplat.strategy import DefaultStrategy

    from m3_core.train import FeatureSpec, TrainConfig, Trainer
    from m3_core.train.optim import build_optimizers, scene_extent

    views = 4
    cams = make_cameras(cfg, views, seed=3)
    frames = [SimpleNamespace(camera=c) for c in cams]
    dataset = SimpleNamespace(frames=frames, root=out_dir, world_frame="")
    specs = [FeatureSpec(n, CHANNELS, 0.8) for n in memory.layout.names]
    tcfg = TrainConfig.sized_for(
        "cpu", 60, cfg.width, cfg.height, features=specs, device="cpu", save_every=0
    )
    tr = Trainer(dataset, tcfg, out_dir)
    g = torch.Generator().manual_seed(5)
    h, w = cfg.height, cfg.width
    fh, fw = max(h // FEATURE_STRIDE, 1), max(w // FEATURE_STRIDE, 1)
    tr.images = {i: torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8)
                 for i in range(views)}  # fmt: skip
    tr.depths = {i: 0.5 + 4.5 * torch.rand(h, w, generator=g) for i in range(views)}
    tr.targets = {
        n: {i: torch.randn(fh, fw, cfg.dim, generator=g).half() for i in range(views)}
        for n in memory.layout.names
    }
    ids = list(range(views))
    extent = scene_extent(dataset, ids)
    optimizers = build_optimizers(memory, tcfg.optim, extent, fused=tcfg.fast_step)
    strategy = DefaultStrategy(**vars(tcfg.densify))
    gauss_opts = {k: optimizers[k] for k in memory.gaussians}
    strategy.check_sanity(memory.gaussians, gauss_opts)
    state = strategy.initialize_state(scene_scale=extent)
    sh = tcfg.sh_degree  # the band count of the later (slower) steps
    walls, cpus = [], []
    for step in range(args.warmup + args.steps):  # before refine_start_iter: no refinement
        t, c = time.perf_counter(), time.process_time()
        draws = tr._draw(memory)
        loss, out, _ = tr._step_loss(memory, ids[step % views], sh, draws)
        if not math.isfinite(float(loss.detach())):
            raise RuntimeError(f"loss {float(loss)} at step {step}")
        strategy.step_pre_backward(memory.gaussians, optimizers, state, step, out.meta)
        loss.backward()
        for opt in optimizers.values():
            opt.step()
            opt.zero_grad(set_to_none=True)
        strategy.step_post_backward(memory.gaussians, gauss_opts, state, step, out.meta)
        del loss, out
        if step >= args.warmup:
            walls.append((time.perf_counter() - t) * 1e3)
            cpus.append((time.process_time() - c) * 1e3)
    res["train_ms"] = statistics.median(walls)
    res["train_cpu_ms"] = statistics.median(cpus)
    res["densify_steps"] = (tcfg.densify.refine_start_iter, tcfg.iterations)


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def child(cfg: Config, args, part: str) -> None:
    """Measure ``part`` of one configuration; print a RESULT line at every phase (the last
    one printed tells the parent where a failing child broke)."""
    import numba
    import torch

    torch.set_num_threads(args.threads)
    numba.set_num_threads(args.threads)
    res: dict = {}

    def report(phase: str) -> None:
        res[f"{part}_phase"] = phase
        print(RESULT + json.dumps(res), flush=True)

    report("build")
    memory, obj_q = make_memory(cfg, args.bank_rows, seed=0)
    res["tensor_mb"] = (
        sum(
            v.numel() * v.element_size()
            for group in (memory.gaussians, memory.projections, memory.banks)
            for v in group.values()
        )
        / 2**20
    )
    if part == "serve":
        measure_serving(memory, obj_q, cfg, args, res, report)
    else:
        with tempfile.TemporaryDirectory(prefix="m3-bench-scale-") as tmp:
            report("train")
            measure_training(memory, cfg, args, res, Path(tmp) / "run")
            report("save")
            memory.save(Path(tmp) / "mem")
            res["disk_bytes"] = folder_bytes(Path(tmp) / "mem")
        res["bytes_per_gaussian"] = res["disk_bytes"] / cfg.gaussians
    res[f"{part}_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res[f"{part}_vm_mb"] = status_kb("VmPeak") / 1024  # the address space the limit counts
    report("done")
