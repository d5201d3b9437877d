"""Started by test_distributed.py under torchrun: trains the tiny scene in ROOT into OUT."""

import sys

import torch

from m3_core.data import load_dataset
from m3_core.train import Trainer
from tests.fixtures.training import tiny_config

if __name__ == "__main__":
    root, out, iterations, views = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(1)
    cfg = tiny_config(iterations=iterations, refine_every=8, views_per_step=views, device="cpu")
    Trainer(load_dataset(root), cfg, out).run()
