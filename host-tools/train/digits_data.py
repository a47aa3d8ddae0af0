"""The digits demo data: split, preprocessing and the committed binary format. Dev-only.

Data: scikit-learn `load_digits` (1,797 8x8 images, pixel values 0..16, 10 classes; ships
inside the scikit-learn package, no download). Fixed split: stratified 70/30,
`train_test_split(X, y, test_size=0.3, stratify=y, random_state=42)` -> 1,257 train / 540 test.

Preprocessing (defined ONCE, here; mirrored bit-exactly by `vitae_edge::preprocess::digits`
in the Rust library, which runs it on device):
  * input: the 64 raw pixels of one image, row-major, integers v in 0..16 (u8);
  * nearest-neighbour upsampling x4 to 32x32: out[y][x] = pix[(y // 4) * 8 + (x // 4)];
  * normalisation x = v / 8 - 1  (== (v/16 - 0.5) / 0.5), in [-1, 1]; every value is
    exactly representable in f32 (and in f16), so the two implementations agree exactly;
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
    """(N, 64) integer pixels 0..16 (any int dtype, or float holding integers) -> float32 (N, 1, 32, 32).

    Mirrors `vitae_edge::preprocess::digits`: out[n, 0, y, x] = pix[n, (y//4)*8 + x//4] / 8 - 1.
    """
    p = np.asarray(pixels)
    if p.ndim == 1:
        p = p[None]
    assert p.shape[1] == SRC * SRC, p.shape
    p = p.astype(np.float32).reshape(-1, SRC, SRC)
    up = np.repeat(np.repeat(p, UPSAMPLE, axis=1), UPSAMPLE, axis=2)      # nearest neighbour
    return (up / np.float32(8.0) - np.float32(1.0)).astype(np.float32)[:, None, :, :]


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
