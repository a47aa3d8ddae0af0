"""The digits demo data: split, preprocessing and the committed binary format. Dev-only.

Data: scikit-learn `load_digits` (1,797 8x8 images, pixel values 0..16, 10 classes; ships
inside the scikit-learn package, no download). Fixed split: stratified 70/30,
`train_test_split(X, y, test_size=0.3, stratify=y, random_state=42)` -> 1,257 train / 540 test.

Preprocessing is defined ONCE, in Rust: `vitae_edge::preprocess::digits::preprocess`, the function
the firmware runs on the device. `preprocess` below does not re-implement it: it writes the pixels
to a VTDIGIT1 file and runs `cargo xtask digits-npy` (the same Rust function) to get the model
input. What it computes:
  * input: the 64 raw pixels of one image, row-major, integers v in 0..16 (u8);
  * nearest-neighbour upsampling x4 to 32x32: out[y][x] = pix[(y // 4) * 8 + (x // 4)];
  * normalisation x = v / 8 - 1  (== (v/16 - 0.5) / 0.5), in [-1, 1];
  * one channel, NCHW: (N, 1, 32, 32) float32.

Binary format of digits/test.bin and digits/calib.bin (little-endian):
  offset 0: 8 bytes magic b"VTDIGIT1"
  offset 8: u32 count
  offset 12: count records of 65 bytes: 64 u8 pixels (row-major 8x8, values 0..16), then 1 u8 label (0..9)
  file size = 12 + 65 * count
"""
from __future__ import annotations

import struct

import numpy as np

MAGIC = b"VTDIGIT1"
RECORD = 65
SRC = 8          # source images are 8x8
UPSAMPLE = 4     # nearest-neighbour factor
IMG = SRC * UPSAMPLE  # 32: model input size (kwargs.json img_size)
SPLIT_SEED = 42
TEST_SIZE = 0.3
CALIB_COUNT = 128
CALIB_SEED = 42


def preprocess(pixels: np.ndarray) -> np.ndarray:
    """(N, 64) integer pixels 0..16 -> float32 (N, 1, 32, 32), through the Rust definition.

    Runs `cargo xtask digits-npy` (i.e. `vitae_edge::preprocess::digits::preprocess`, what the
    device runs) so that training sees exactly the device's numbers; needs cargo (dev-only, like
    torch).
    """
    import os
    import subprocess
    import tempfile

    p = np.asarray(pixels)
    if p.ndim == 1:
        p = p[None]
    assert p.shape[1] == SRC * SRC, p.shape
    assert p.min() >= 0 and p.max() <= 16, "pixels must be integers 0..16"
    repo = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "pixels.bin")
        out = os.path.join(tmp, "x.npy")
        write_bin(src, p.astype(np.uint8), np.zeros(len(p), dtype=np.uint8))
        subprocess.run(["cargo", "xtask", "digits-npy", src, out], cwd=repo, check=True,
                       stdout=subprocess.DEVNULL)
        return np.load(out)


def load_split():
    """-> (x_train u8 (1257,64), y_train u8, x_test u8 (540,64), y_test u8): the fixed 70/30 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    X = d.data.astype(np.uint8)          # values are integers 0..16
    assert np.array_equal(X, d.data) and X.max() <= 16
    y = d.target.astype(np.uint8)
    xtr, xte, ytr, yte = train_test_split(X, y, test_size=TEST_SIZE, stratify=y, random_state=SPLIT_SEED)
    return xtr, ytr, xte, yte


def calibration_subset(xtr: np.ndarray, ytr: np.ndarray):
    """A fixed, stratified CALIB_COUNT-image subset of the TRAIN split (for int8 calibration)."""
    from sklearn.model_selection import train_test_split

    xc, _, yc, _ = train_test_split(xtr, ytr, train_size=CALIB_COUNT, stratify=ytr, random_state=CALIB_SEED)
    return xc, yc


def write_bin(path: str, pixels: np.ndarray, labels: np.ndarray) -> None:
    pixels = np.asarray(pixels, dtype=np.uint8)
    labels = np.asarray(labels, dtype=np.uint8)
    assert pixels.shape == (len(labels), 64) and pixels.max() <= 16 and labels.max() <= 9
    rec = np.concatenate([pixels, labels[:, None]], axis=1)
    with open(path, "wb") as f:
        f.write(MAGIC)
        f.write(struct.pack("<I", len(labels)))
        f.write(rec.tobytes())


def read_bin(path: str):
    """-> (pixels u8 (N,64), labels u8 (N,))"""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != MAGIC:
        raise ValueError("%s: bad magic %r" % (path, data[:8]))
    (n,) = struct.unpack_from("<I", data, 8)
    if len(data) != 12 + RECORD * n:
        raise ValueError("%s: size %d != 12 + 65*%d" % (path, len(data), n))
    rec = np.frombuffer(data, dtype=np.uint8, offset=12).reshape(n, RECORD)
    return rec[:, :64].copy(), rec[:, 64].copy()
