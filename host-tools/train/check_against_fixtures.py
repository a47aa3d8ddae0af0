#!/usr/bin/env python3
"""Prove that vitae_model.py is the official ViTAE_ViT_basic.

For each fixture (shared/fixtures/mcu_a, shared/fixtures/vitae_t, made with the unmodified official code):
  * build our model from kwargs.json and load model.pth with load_state_dict(strict=True);
  * compare state_dict key order, shapes and dtypes with the checkpoint;
  * run input.npy (eval, float32, CPU) and compare with logits.npy;
  * mcu_a: compare every intermediate in intermediates/*.npy;
  * check that torch.manual_seed(0) + our constructor reproduces the checkpoint's frozen performer
    `w` matrices bit for bit (the fixtures were built as manual_seed(0) + official constructor and
    `w` is never re-randomised), i.e. our construction order / RNG consumption is the official one.

Error metric: max |ours - ref| (abs) and abs / max|ref| (rel), as in the fixtures README.
Exit status 1 if any relative error exceeds 1e-4 or any structural check fails.

    python3 host-tools/train/check_against_fixtures.py [--fixtures /work/shared/fixtures]
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vitae_model import build_model, count_macs, count_params, peak_activation_elems  # noqa: E402

REL_TOL = 1e-4


def err(ours, ref):
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    a = float(np.abs(ours - ref).max())
    return a, a / max(float(np.abs(ref).max()), 1e-30)


def check(folder, name):
    ok = True
    kw = json.load(open(os.path.join(folder, "kwargs.json")))
    sd = torch.load(os.path.join(folder, "model.pth"), map_location="cpu", weights_only=True)

    torch.manual_seed(0)
    model = build_model(kw)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}

    ours_keys = list(fresh.keys())
    ref_keys = list(sd.keys())
    same_order = ours_keys == ref_keys
    shapes_ok = all(fresh[k].shape == sd[k].shape and fresh[k].dtype == sd[k].dtype for k in ref_keys if k in fresh)
    missing, unexpected = model.load_state_dict(sd, strict=True)  # raises on any mismatch
    w_keys = [k for k in ref_keys if k.endswith("attn.w")]
    w_same = all(torch.equal(fresh[k], sd[k]) for k in w_keys)
    w_frozen = all(not p.requires_grad for n, p in model.named_parameters() if n.endswith("attn.w"))
    print("== %s: %d state_dict keys, strict load OK, key order identical: %s, shapes/dtypes identical: %s"
          % (name, len(ref_keys), same_order, shapes_ok))
    print("   frozen performer w (%d matrices): requires_grad=False: %s; seed-0 construction reproduces them bit-exactly: %s"
          % (len(w_keys), w_frozen, w_same))
    ok &= same_order and shapes_ok and w_frozen and w_same

    cfg_path = os.path.join(folder, "config.json")
    if os.path.exists(cfg_path):
        cfg = json.load(open(cfg_path))
        pc = count_params(model)
        macs = count_macs(model, kw["img_size"])
        ref_macs = cfg.get("analysis", {}).get("total_macs")
        ref_params = cfg.get("params", {}).get("params_total")
        print("   params: ours %d (ref %s); MACs: ours %d (ref %s)" % (pc["params_total"], ref_params, macs["total"], ref_macs))
        ok &= (ref_params is None or ref_params == pc["params_total"]) and (ref_macs is None or ref_macs == macs["total"])
        ref_peak = cfg.get("analysis", {}).get("peak_int8_bytes_naive")
        if ref_peak is not None and kw["img_size"] <= 96:
            peak, _ = peak_activation_elems(model, kw["img_size"])
            print("   naive int8 activation peak: ours %d B (ref %d B)" % (peak, ref_peak))
            ok &= peak == ref_peak

    model.eval()
    x = torch.from_numpy(np.load(os.path.join(folder, "input.npy")))
    taps = {}
    with torch.no_grad():
        logits = model(x, taps).numpy()
    ref = np.load(os.path.join(folder, "logits.npy"))
    a, r = err(logits, ref)
    same_argmax = int(logits.argmax()) == int(ref.argmax())
    print("   logits %s: max abs err %.3e, rel %.3e, argmax equal: %s" % (ref.shape, a, r, same_argmax))
    ok &= r < REL_TOL and same_argmax

    idir = os.path.join(folder, "intermediates")
    if os.path.isdir(idir):
        worst = (0.0, "")
        for fn in sorted(os.listdir(idir)):
            if not fn.endswith(".npy"):
                continue
            key = fn[:-4]
            refi = np.load(os.path.join(idir, fn))
            if key not in taps:
                print("   intermediate %s: NOT PRODUCED" % key)
                ok = False
                continue
            a, r = err(taps[key].numpy(), refi)
            print("   %-12s %-14s max abs err %.3e  rel %.3e" % (key, tuple(refi.shape), a, r))
            ok &= r < REL_TOL
            worst = max(worst, (r, key))
        print("   worst intermediate: %s rel %.3e" % (worst[1], worst[0]))
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixtures", default=os.environ.get("VITAE_FIXTURES", "/work/shared/fixtures"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    ok = True
    for name in ("mcu_a", "vitae_t"):
        ok &= check(os.path.join(args.fixtures, name), name)
    print("RESULT:", "PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
