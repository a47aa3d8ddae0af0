#!/usr/bin/env python3
"""Rough PyTorch estimate of how the trained digits model survives fp16 and int8. Dev-only.

This is NOT the device arithmetic (that is the Rust engine's job, and its numbers are the ones
that count); it only tells whether the trained model has enough margin to be quantization-friendly:

  * fp16: every weight rounded to f16, and every module output (conv, linear, activation,
    LayerNorm, BN, cell outputs, the performer's attention output) rounded to f16; the
    performer's internal exp() features stay f32 (the runtime rescales them, design doc Q4).
  * int8: weights symmetric per-output-channel int8 (BN folded into the preceding conv
    first), biases in f32; activations at the same points fake-quantized to asymmetric
    per-tensor int8 with min/max ranges calibrated on digits/calib.bin (128 TRAIN images).

    python3 host-tools/train/quant_sim.py [--model-dir host-tools/train/digits]
"""
import argparse
import copy
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import digits_data as dd  # noqa: E402
from vitae_model import NormalCell, ReductionCell, TokenPerformer, build_model  # noqa: E402

ACT_TYPES = (nn.Conv2d, nn.Linear, nn.GELU, nn.SiLU, nn.LayerNorm, nn.BatchNorm2d, ReductionCell, NormalCell)


def fold_bn(model):
    """Fold every BatchNorm2d into the conv right before it (same Sequential); BN -> Identity."""
    for mod in model.modules():
        if isinstance(mod, nn.Sequential):
            items = list(mod._modules.items())
            for (kc, conv), (kb, bn) in zip(items, items[1:]):
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                    conv.weight.data = conv.weight.data * s[:, None, None, None]
                    conv.bias.data = (conv.bias.data - bn.running_mean) * s + bn.bias
                    mod._modules[kb] = nn.Identity()
    return model


def quant_weights_int8(model):
    for mod in model.modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            w = mod.weight.data
            amax = w.abs().flatten(1).max(1).values.clamp_min(1e-12)
            scale = (amax / 127).view(-1, *([1] * (w.dim() - 1)))
            mod.weight.data = torch.clamp(torch.round(w / scale), -127, 127) * scale


def round_weights_f16(model):
    for p in model.parameters():
        p.data = p.data.half().float()


class ActQuant:
    """Forward hooks that record ranges (calibrate) or fake-quantize outputs."""

    def __init__(self, model, mode):
        self.mode = mode  # 'calib', 'int8', 'f16'
        self.ranges = {}
        self.hooks = []
        for name, mod in model.named_modules():
            if isinstance(mod, ACT_TYPES):
                self.hooks.append(mod.register_forward_hook(self._hook(name)))
            if isinstance(mod, TokenPerformer):
                orig = mod.attn

                def attn(x, _orig=orig, _name=name + ".attn_out"):
                    return self._apply(_name, _orig(x))
                mod.attn = attn

    def _hook(self, name):
        def h(mod, inp, out):
            return self._apply(name, out)
        return h

    def _apply(self, name, out):
        if self.mode == "calib":
            lo, hi = float(out.min()), float(out.max())
            plo, phi = self.ranges.get(name, (lo, hi))
            self.ranges[name] = (min(lo, plo), max(hi, phi))
            return out
        if self.mode == "f16":
            return out.half().float()
        lo, hi = self.ranges[name]
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        scale = max(hi - lo, 1e-12) / 255.0
        zp = round(-lo / scale) - 128
        q = torch.clamp(torch.round(out / scale) + zp, -128, 127)
        return (q - zp) * scale


@torch.no_grad()
def accuracy(model, x, y):
    model.eval()
    logits = model(x)
    return (logits.argmax(1) == y).float().mean().item(), logits


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", default=os.path.join(HERE, "digits"))
    ap.add_argument("--data-dir", default=os.path.join(HERE, "digits"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    kw = json.load(open(os.path.join(args.model_dir, "kwargs.json")))
    sd = torch.load(os.path.join(args.model_dir, "model.pth"), map_location="cpu", weights_only=True)
    base = build_model(kw)
    base.load_state_dict(sd, strict=True)
    base.eval()
    xt, yt = dd.read_bin(os.path.join(args.data_dir, "test.bin"))
    xc, _ = dd.read_bin(os.path.join(args.data_dir, "calib.bin"))
    X = torch.from_numpy(dd.preprocess(xt))
    Y = torch.from_numpy(yt.astype(np.int64))
    XC = torch.from_numpy(dd.preprocess(xc))

    acc32, l32 = accuracy(base, X, Y)

    m16 = copy.deepcopy(base)
    round_weights_f16(m16)
    ActQuant(m16, "f16")
    acc16, l16 = accuracy(m16, X, Y)

    m8 = fold_bn(copy.deepcopy(base))
    acc_fold, _ = accuracy(m8, X, Y)
    quant_weights_int8(m8)
    accw8, _ = accuracy(m8, X, Y)
    aq = ActQuant(m8, "calib")
    with torch.no_grad():
        m8(XC)                                     # calibration pass: record activation ranges
    aq.mode = "int8"
    acc8, l8 = accuracy(m8, X, Y)

    n = len(Y)
    def wrong(l):
        return torch.nonzero(l.argmax(1) != Y).flatten().tolist()
    print("test images: %d" % n)
    print("f32                       : %.4f  wrong %s" % (acc32, wrong(l32)))
    print("BN folded (f32)           : %.4f" % acc_fold)
    print("f16 weights+activations   : %.4f  wrong %s  (delta %+.3f pt, max |dlogit| %.2e)"
          % (acc16, wrong(l16), 100 * (acc16 - acc32), (l16 - l32).abs().max()))
    print("int8 weights only         : %.4f" % accw8)
    print("int8 weights+activations  : %.4f  wrong %s  (delta %+.3f pt, max |dlogit| %.2e)"
          % (acc8, wrong(l8), 100 * (acc8 - acc32), (l8 - l32).abs().max()))


if __name__ == "__main__":
    main()
