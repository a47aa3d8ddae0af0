"""Writes the .pth and .npy fuzz seeds with the real writers (PyTorch, numpy).

Run from tests/fuzz: `python3 make_seeds.py`. Deterministic content; small files (the seeds are
committed). The blob and .safetensors seeds come from `cargo xtask fuzz --make-seeds`.
"""

import collections
import os

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
CKPT = os.path.join(HERE, "seeds", "checkpoint")
NPY = os.path.join(HERE, "seeds", "npy")
os.makedirs(CKPT, exist_ok=True)
os.makedirs(NPY, exist_ok=True)

g = torch.Generator().manual_seed(0)


def t(*shape, dtype=torch.float32):
    return torch.randn(*shape, generator=g).to(dtype)


# A plain state_dict, as torch.save(model.state_dict()) writes it.
sd = collections.OrderedDict()
sd["layers.0.RC.PCM.0.weight"] = t(4, 1, 3, 3)
sd["layers.0.RC.PCM.1.running_mean"] = t(4)
sd["layers.0.RC.PCM.1.num_batches_tracked"] = torch.tensor(3, dtype=torch.int64)
sd["head.weight"] = t(3, 4)
sd["head.bias"] = t(3)
torch.save(sd, os.path.join(CKPT, "state_dict.pth"))

# A training checkpoint dict holding the state_dict, with half / bfloat16 tensors, a
# transposed (strided) view and two tensors sharing one storage.
base = t(6, 4)
shared = collections.OrderedDict()
shared["a.weight"] = base[:3]
shared["b.weight"] = base[3:]
shared["c.weight"] = t(4, 5).t()
shared["d.half"] = t(2, 3, dtype=torch.float16)
shared["e.bf16"] = t(5, dtype=torch.bfloat16)
shared["f.flag"] = torch.tensor([True, False])
torch.save({"epoch": 3, "state_dict": shared, "best": 0.5}, os.path.join(CKPT, "training.pth"))

# A DataParallel-style prefix, under 'model'.
torch.save({"model": {"module.x.weight": t(2, 2)}}, os.path.join(CKPT, "module_prefix.pth"))

# .npy in every dtype, byte order, layout and header version the reader accepts.
rng = np.random.default_rng(0)
x = rng.standard_normal((1, 3, 4, 4)).astype(np.float32)
np.save(os.path.join(NPY, "f32_nchw.npy"), x)
np.save(os.path.join(NPY, "f64.npy"), rng.standard_normal((2, 3)))
np.save(os.path.join(NPY, "u8.npy"), np.arange(10, dtype=np.uint8))
np.save(os.path.join(NPY, "i64_scalar.npy"), np.int64(-7))
np.save(os.path.join(NPY, "f32_big_endian.npy"), x.astype(">f4"))
np.save(os.path.join(NPY, "f32_fortran.npy"), np.asfortranarray(rng.standard_normal((3, 5)).astype(np.float32)))
np.save(os.path.join(NPY, "empty.npy"), np.zeros((0, 3), dtype=np.float32))
for version in [(2, 0), (3, 0)]:
    with open(os.path.join(NPY, f"v{version[0]}.npy"), "wb") as f:
        np.lib.format.write_array(f, x[:, :1], version=version)

# .safetensors: small files by the reference writer when it is installed (else by hand: an
# 8-byte little-endian header length, the JSON header, then the tensor bytes).
small = {
    "a.weight": t(3, 4),
    "b.half": t(2, 2, dtype=torch.float16),
    "c.bf16": t(3, dtype=torch.bfloat16),
    "d.count": torch.tensor([5], dtype=torch.int64),
}
try:
    from safetensors.torch import save_file

    save_file(small, os.path.join(CKPT, "small.safetensors"), metadata={"format": "pt"})
except ImportError:
    import json
    import struct

    names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64"}
    header, blobs, at = {"__metadata__": {"format": "pt"}}, [], 0
    for k, v in small.items():
        raw = v.contiguous().view(torch.uint8).numpy().tobytes()
        header[k] = {"dtype": names[v.dtype], "shape": list(v.shape), "data_offsets": [at, at + len(raw)]}
        blobs.append(raw)
        at += len(raw)
    text = json.dumps(header).encode()
    with open(os.path.join(CKPT, "small.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))
