#!/usr/bin/env python3
"""Train the ViTAE-Edge demo model (a small official-structure ViTAE_ViT_basic) on sklearn digits.

Dev-only: needs torch, scikit-learn, numpy (requirements-dev.txt). CPU, 1 thread by default, fixed seed.

    python3 host-tools/train/train_digits.py                 # final model -> digits/{model.pth,kwargs.json,training.json}
    python3 host-tools/train/train_digits.py --val --out /tmp/x   # hyper-parameter work: hold out 20% of TRAIN,
                                                              # report val accuracy, never look at the test set

The train split (1,257 images) is regenerated from scikit-learn (digits_data.load_split); the
540 test images are read from the committed digits/test.bin (and checked to be the same split).
The model input is exactly digits_data.preprocess (x4 nearest upsampling to 32x32, v/8 - 1).
Augmentation (training only): random translation of the 32x32 image by -S..S pixels
(background value -1 fills), S = --shift.
"""
import argparse
import json
import math
import os
import platform
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import digits_data as dd  # noqa: E402
from vitae_model import build_model, count_macs, count_params, peak_activation_elems  # noqa: E402

# The demo model: official ViTAE_ViT_basic structure (RC performer / performer / performer_less,
# transformer NCs), widths from shared/fixtures/mcu_a, one input channel, 32x32 input.
DEFAULT_KWARGS = {
    "img_size": dd.IMG,
    "stages": 3,
    "embed_dims": [16, 24, 40],
    "token_dims": [24, 32, 80],
    "downsample_ratios": [4, 2, 2],
    "kernel_size": [7, 3, 3],
    "RC_heads": [1, 1, 1],
    "NC_heads": [1, 1, 2],
    "dilations": [[1, 2, 3, 4], [1, 2, 3], [1, 2]],
    "RC_tokens_type": ["performer", "performer", "performer_less"],
    "NC_tokens_type": ["transformer", "transformer", "transformer"],
    "RC_group": [1, 1, 1],
    "NC_group": [1, 1, 20],
    "NC_depth": [0, 0, 3],
    "mlp_ratio": 2.0,
    "num_classes": 10,
    "class_token": False,
    "in_chans": 1,
    "RC_op": "cat",
    "qkv_bias": True,
    "qk_scale": None,
    "drop_rate": 0.0,
    "attn_drop_rate": 0.0,
    "drop_path_rate": 0.0,
}


def check_kwargs(kw):
    s = kw["stages"]
    assert kw["RC_tokens_type"][:s] == ["performer", "performer", "performer_less"]
    last = len(kw["dilations"][s - 1]) * kw["embed_dims"][s - 1]
    assert last == kw["token_dims"][s - 1], "performer_less RC: len(dilations)*embed_dims must equal token_dims"
    for i in range(s):
        if kw["NC_depth"][i]:
            t, g = kw["token_dims"][i], kw["NC_group"][i]
            assert t % g == 0 and int(t * kw["mlp_ratio"]) % g == 0, "NC PCM groups must divide dims"
            assert t % kw["NC_heads"][i] == 0
    assert kw["img_size"] % int(np.prod(kw["downsample_ratios"][:s])) == 0


def shift_batch(x, max_shift, gen):
    """Random integer translation of (B,1,H,W) by -S..S px, filled with the background value -1."""
    if max_shift <= 0:
        return x
    B, _, H, W = x.shape
    s = max_shift
    pad = F.pad(x, (s, s, s, s), value=-1.0)
    dx = torch.randint(0, 2 * s + 1, (B,), generator=gen)
    dy = torch.randint(0, 2 * s + 1, (B,), generator=gen)
    out = torch.empty_like(x)
    for b in range(B):
        out[b] = pad[b, :, dy[b]:dy[b] + H, dx[b]:dx[b] + W]
    return out


@torch.no_grad()
def evaluate(model, x, y, bs=540):
    model.eval()
    logits = torch.cat([model(x[i:i + bs]) for i in range(0, len(x), bs)])
    pred = logits.argmax(1)
    acc = (pred == y).float().mean().item()
    top2 = logits.topk(2, dim=1).values
    margin = (top2[:, 0] - top2[:, 1])
    return acc, logits, margin


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kwargs", help="JSON file overriding the default model kwargs (merged)")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--warmup", type=int, default=5, help="linear warm-up epochs")
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--drop-path", type=float, default=0.1, help="training-time drop_path_rate")
    ap.add_argument("--shift", type=int, default=4, help="max random translation in 32x32 pixels")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (<= 2; 1 is faster when the 2 cores are shared with compilers)")
    ap.add_argument("--val", action="store_true", help="hold out 20%% of TRAIN as validation; do not touch test")
    ap.add_argument("--out", default=os.path.join(HERE, "digits"))
    ap.add_argument("--log-every", type=int, default=20)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    kw = dict(DEFAULT_KWARGS)
    if args.kwargs:
        kw.update(json.load(open(args.kwargs)))
    check_kwargs(kw)

    xtr, ytr, xte, yte = dd.load_split()
    test_path = os.path.join(HERE, "digits", "test.bin")
    if os.path.exists(test_path):
        px, lb = dd.read_bin(test_path)
        assert np.array_equal(px, xte) and np.array_equal(lb, yte), "digits/test.bin is not the fixed split"
    if args.val:
        from sklearn.model_selection import train_test_split
        xtr, xte, ytr, yte = train_test_split(xtr, ytr, test_size=0.2, stratify=ytr, random_state=0)
        eval_name = "val"
    else:
        eval_name = "test"

    Xtr = torch.from_numpy(dd.preprocess(xtr))
    Ytr = torch.from_numpy(ytr.astype(np.int64))
    Xev = torch.from_numpy(dd.preprocess(xte))
    Yev = torch.from_numpy(yte.astype(np.int64))

    train_kw = dict(kw, drop_path_rate=args.drop_path)
    torch.manual_seed(args.seed)                 # model init (incl. the frozen performer w) from the seed
    model = build_model(train_kw)
    pc = count_params(model)
    macs = count_macs(model, kw["img_size"])
    peak, peak_at = peak_activation_elems(model, kw["img_size"])   # int8: 1 byte per element
    print("params %d (trainable %d), MACs %d, est. int8 peak activations %d B" %
          (pc["params_total"], pc["params_trainable"], macs["total"], peak), flush=True)

    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    steps_per_epoch = math.ceil(len(Xtr) / args.batch)
    total = args.epochs * steps_per_epoch
    warm = args.warmup * steps_per_epoch

    def lr_at(step):
        if step < warm:
            return args.lr * (step + 1) / warm
        t = (step - warm) / max(1, total - warm)
        return args.lr * 0.5 * (1 + math.cos(math.pi * t))

    gen = torch.Generator().manual_seed(args.seed + 1)
    crit = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    t0 = time.time()
    step = 0
    for ep in range(args.epochs):
        model.train()
        perm = torch.randperm(len(Xtr), generator=gen)
        tot_loss = 0.0
        for i in range(0, len(Xtr), args.batch):
            idx = perm[i:i + args.batch]
            xb = shift_batch(Xtr[idx], args.shift, gen)
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            loss = crit(model(xb), Ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot_loss += loss.item() * len(idx)
            step += 1
        if (ep + 1) % args.log_every == 0 or ep + 1 == args.epochs:
            acc, _, margin = evaluate(model, Xev, Yev)
            print("epoch %4d  loss %.4f  %s acc %.4f (%d/%d wrong)  min top1-top2 margin %.3f  %.0fs" %
                  (ep + 1, tot_loss / len(Xtr), eval_name, acc, round((1 - acc) * len(Yev)), len(Yev),
                   margin.min().item(), time.time() - t0), flush=True)
    train_time = time.time() - t0

    acc, logits, margin = evaluate(model, Xev, Yev)
    tr_acc, _, _ = evaluate(model, Xtr, Ytr)
    wrong = torch.nonzero(logits.argmax(1) != Yev).flatten().tolist()
    correct = logits.argmax(1) == Yev
    srt = margin[correct].sort().values
    print("final %s accuracy %.4f (%d wrong: idx %s), train accuracy %.4f, train time %.1fs" %
          (eval_name, acc, len(wrong), wrong, tr_acc, train_time))

    os.makedirs(args.out, exist_ok=True)
    torch.save(model.state_dict(), os.path.join(args.out, "model.pth"))
    with open(os.path.join(args.out, "kwargs.json"), "w") as f:
        json.dump(kw, f, indent=1)
        f.write("\n")
    cmd = "python3 host-tools/train/train_digits.py " + " ".join(sys.argv[1:])
    info = {
        "command": cmd.strip(),
        "seed": args.seed,
        "epochs": args.epochs,
        "hyper_parameters": {k: v for k, v in vars(args).items() if k not in ("out", "log_every", "threads")},
        "evaluated_on": eval_name + (" (20% of the train split, random_state 0)" if args.val else
                                     " (digits/test.bin, 540 held-out images)"),
        "f32_%s_accuracy" % eval_name: round(acc, 6),
        "%s_wrong" % eval_name: len(wrong),
        "%s_wrong_indices" % eval_name: wrong,
        "%s_count" % eval_name: len(Yev),
        "min_top1_top2_logit_margin_correct": round(srt[0].item(), 4) if len(srt) else None,
        "smallest_margins_correct": [round(v, 4) for v in srt[:5].tolist()],
        "train_accuracy": round(tr_acc, 6),
        "train_images": len(Xtr),
        "train_time_s": round(train_time, 1),
        "threads": args.threads,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "sklearn": __import__("sklearn").__version__,
        "python": platform.python_version(),
        "params": pc,
        "macs": macs,
        "peak_int8_activation_bytes_naive": peak,
        "peak_at_op": peak_at,
        "preprocess": "digits_data.preprocess: nearest x%d to %dx%d, x = v/8 - 1, 1 channel" % (dd.UPSAMPLE, dd.IMG, dd.IMG),
    }
    with open(os.path.join(args.out, "training.json"), "w") as f:
        json.dump(info, f, indent=1)
        f.write("\n")
    print("wrote", os.path.join(args.out, "model.pth"), "kwargs.json, training.json")


if __name__ == "__main__":
    main()
