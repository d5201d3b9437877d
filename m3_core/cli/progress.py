"""A tqdm bar fed by ``m3_core.train.Progress`` callbacks, and polite Ctrl-C handling."""

from __future__ import annotations

import math
import signal
import sys
from contextlib import contextmanager

from tqdm import tqdm


class TrainBar:
    """Turns Progress events into one tqdm bar (stage in the description, metrics postfix)."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None
        self.stage = ""

    def __call__(self, p) -> None:
        if p.stage != "training":
            if p.stage != self.stage and self.bar is None:
                print(f"[m3] {p.stage}...", file=sys.stderr, flush=True)
            self.stage = p.stage
            return
        if self.bar is None:
            self.bar = tqdm(
                total=p.total,
                initial=p.step - 1,
                desc="training",
                unit="step",
                dynamic_ncols=True,
                file=sys.stderr,
            )
        self.bar.update(p.step - self.bar.n)
        post = {"loss": f"{p.loss:.4f}", "gauss": p.num_gaussians}
        if not math.isnan(p.psnr):
            post["psnr"] = f"{p.psnr:.1f}"
        self.bar.set_postfix(post, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextmanager
def stop_on_sigint():
    """Yield a ``should_stop()`` callable; the first Ctrl-C sets it, a second one aborts.
    SIGTERM (``docker stop``, systemd, torchrun passing on a Ctrl-C to its processes) also
    sets it, and never aborts: the step finishes and a resumable checkpoint is saved."""
    flag = {"stop": False}
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, frame):
        if flag["stop"] and signum == signal.SIGINT:
            signal.signal(signal.SIGINT, previous[signal.SIGINT])
            raise KeyboardInterrupt
        if not flag["stop"]:
            print(
                "\n[m3] stopping after this step; saving a resumable checkpoint "
                "(Ctrl-C again to abort)",
                file=sys.stderr,
                flush=True,
            )
        flag["stop"] = True

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield lambda: flag["stop"]
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
