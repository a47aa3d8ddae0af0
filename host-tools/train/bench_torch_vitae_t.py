#!/usr/bin/env python3
"""Time PyTorch's CPU forward pass of ViTAE-T at 224x224 (batch 1, eval, float32, no_grad),
to compare with the Rust f32 reference engine:

    python3 host-tools/train/bench_torch_vitae_t.py [--threads N] [--iters 20]
    cargo run --release -p vitae -- bench-reference --arch vitae-t \
        --checkpoint ../shared/fixtures/vitae_t/model.pth

Uses our official-equivalent model (vitae_model.py) with the fixture checkpoint when it is
there (and checks the logits against the fixture), else random weights. Dev-only: torch is not
needed by the Rust crates or their tests. Prints median and min milliseconds per forward.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vitae_model import build_model  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared", "fixtures", "vitae_t"))

VITAE_T = dict(
    RC_tokens_type=["performer", "performer", "performer_less"],
    NC_tokens_type=["transformer", "transformer", "transformer"],
    stages=3, embed_dims=[64, 64, 128], token_dims=[64, 64, 256], downsample_ratios=[4, 2, 2],
    NC_depth=[0, 0, 7], NC_heads=[1, 1, 4], RC_heads=[1, 1, 1], mlp_ratio=2.0,
    NC_group=[1, 1, 64], RC_group=[1, 1, 1],
)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (default: all cores)")
    parser.add_argument("--iters", type=int, default=20, help="timed forward passes after 3 warm-ups")
    parser.add_argument("--fixture", default=FIXTURE, help="folder with kwargs.json/model.pth/input.npy/logits.npy")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    have_fixture = os.path.exists(os.path.join(args.fixture, "model.pth"))
    kwargs = json.load(open(os.path.join(args.fixture, "kwargs.json"))) if have_fixture else VITAE_T
    model = build_model(kwargs).eval()
    x = torch.randn(1, 3, 224, 224)
    if have_fixture:
        import numpy as np
        model.load_state_dict(torch.load(os.path.join(args.fixture, "model.pth"), map_location="cpu", weights_only=True))
        x = torch.from_numpy(np.load(os.path.join(args.fixture, "input.npy")))
        with torch.no_grad():
            ref = torch.from_numpy(np.load(os.path.join(args.fixture, "logits.npy")))
            err = (model(x) - ref).abs().max().item()
        print("fixture logits max |diff| %.2e" % err)

    times = []
    with torch.no_grad():
        for _ in range(3):
            model(x)
        for _ in range(args.iters):
            start = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - start) * 1e3)
    print("pytorch %s: ViTAE-T 224x224, %d threads, %d iterations: median %.2f ms, min %.2f ms per forward"
          % (torch.__version__, torch.get_num_threads(), args.iters, statistics.median(times), min(times)))


if __name__ == "__main__":
    main()
