#!/usr/bin/env python3
"""Generate tests/host/data/rc_transformer: a tiny ViTAE whose reduction cells use the Dec-2021
'transformer' token type (Token_transformer, 2 heads) — a path the shared fixtures do not
cover — plus features of real torch.save output our .pth reader must handle.

Dev-only (needs torch); the Rust tests only read the files it writes:
  kwargs.json, model.pth, input.npy, logits.npy, intermediates.npz-free *.npy

Model: host-tools/train/vitae_model.py (our PyTorch ViTAE, written from the design doc and
checked against the official fixtures). Weights are re-randomised so BatchNorm/LayerNorm/biases
matter. The checkpoint is saved as a *training checkpoint* {'epoch', 'args' (argparse.Namespace),
'model': {'module.' + key: tensor}} with one transposed (non-contiguous) weight and two biases
that are offset views into one shared storage.

    python3 tests/host/data/make_rc_transformer.py
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "host-tools", "train"))
from vitae_model import build_model  # noqa: E402

OUT = os.path.join(HERE, "rc_transformer")

KWARGS = {
    "img_size": 32, "in_chans": 1, "stages": 2,
    "embed_dims": [8, 12], "token_dims": [16, 24], "downsample_ratios": [4, 2],
    "kernel_size": [7, 3], "RC_heads": [2, 3], "NC_heads": [1, 2],
    "dilations": [[1, 2], [1, 2]],
    "RC_tokens_type": ["transformer", "transformer"], "NC_tokens_type": "transformer",
    "RC_group": [1, 4], "NC_group": [1, 4], "NC_depth": [0, 2], "mlp_ratio": 1.5,
    "qkv_bias": False, "qk_scale": 0.3, "num_classes": 5,
}


def main():
    torch.manual_seed(0)
    model = build_model(KWARGS).eval()
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("running_var"):
                continue
            if p.dim() == 1:
                p.copy_(torch.rand(p.shape, generator=g) * 0.6 + 0.7 if name.endswith("weight") else
                        (torch.rand(p.shape, generator=g) - 0.5) * 0.2)
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_((torch.rand(b.shape, generator=g) - 0.5))
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) * 2.0 + 0.4)
        # A transposed (non-contiguous) weight and two biases sharing one storage at offsets.
        fc1 = model.layers[1].NC[0].mlp.fc1
        fc1.weight.data = fc1.weight.data.t().contiguous().t()
        assert not fc1.weight.is_contiguous()
        head_b, proj_b = model.head.bias, model.layers[1].NC[1].attn.proj.bias
        shared = torch.cat([torch.zeros(3), head_b.data, proj_b.data])
        head_b.data = shared[3:3 + head_b.numel()]
        proj_b.data = shared[3 + head_b.numel():]

    x = torch.randn(1, 1, 32, 32, generator=g)
    taps = {}
    with torch.no_grad():
        logits = model(x, taps)

    os.makedirs(OUT, exist_ok=True)
    sd = model.state_dict()
    checkpoint = {
        "epoch": 5,
        "args": argparse.Namespace(lr=0.1, model="tiny"),
        "model": {"module." + k: v for k, v in sd.items()},
    }
    torch.save(checkpoint, os.path.join(OUT, "model.pth"))
    with open(os.path.join(OUT, "kwargs.json"), "w") as f:
        json.dump(KWARGS, f, indent=1)
    np.save(os.path.join(OUT, "input.npy"), x.numpy())
    np.save(os.path.join(OUT, "logits.npy"), logits.numpy())
    for name, t in taps.items():
        np.save(os.path.join(OUT, name + ".npy"), np.ascontiguousarray(t.numpy()))
    print("wrote", OUT, sorted(taps), "logits", logits.numpy().round(4).tolist())


if __name__ == "__main__":
    main()
