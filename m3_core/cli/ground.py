"""``m3 ground MEM "text" [--feature NAME] [--max-results K] [--min-score S] [--json]``.

Prints the objects matching the text in the memory's world frame, best first. With ``--json``
one object: ``{"query", "frame": "world", "feature", "objects": [{"label", "score", "position":
[x, y, z], "bbox_min", "bbox_max", "num_gaussians"}]}``; ``objects`` is ``[]`` when nothing
matches (exit status 0 either way).
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("memory", help="memory folder")
    p.add_argument("text", help='what to look for, e.g. "red backpack"')
    p.add_argument("--feature", default=None, help="feature to query (default: the first "
                   "that can embed text)")  # fmt: skip
    p.add_argument("--max-results", type=int, default=None, help="at most K objects")
    p.add_argument("--min-score", type=float, default=None,
                   help="relevancy threshold in [0, 1] (default: GroundParams, 0.5)")  # fmt: skip
    p.add_argument("--weights", default=None, help="folder of extractor weights (text towers)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    import json

    from m3_core.cli.main import shorten
    from m3_core.query import MemoryPredictor

    pred = MemoryPredictor.load(args.memory, device=args.device, weights_dir=args.weights)
    feature = args.feature or pred.default_feature
    objects = pred.ground(
        args.text, feature=feature, min_score=args.min_score, max_results=args.max_results
    )
    if args.json:
        doc = {
            "query": args.text,
            "frame": "world",
            "feature": feature,
            "objects": [o.to_dict() for o in objects],
        }
        print(json.dumps(doc, indent=1))
        return 0
    quoted = shorten(repr(args.text), 120)
    if not objects:
        print(f"no match for {quoted} (feature {feature})")
        return 0
    print(f"{len(objects)} object(s) for {quoted} (feature {feature}, world frame, m):")
    for i, o in enumerate(objects):
        c, lo, hi = (", ".join(f"{v:.3f}" for v in a) for a in (o.center, o.bbox_min, o.bbox_max))
        print(f"  {i + 1}. score {o.score:.3f}  centre ({c})  box [{lo}] .. [{hi}]  "
              f"{o.num_gaussians} Gaussians")  # fmt: skip
    return 0
