"""ViTAE-Edge from Python.

* :func:`quantize` turns a ViTAE checkpoint into a device blob (``bytes``), like
  ``vitae quantize``.
* :class:`Engine` runs a blob on the host through the kernels the Cortex-M firmware runs: its
  logits are bit-identical to the device's and to ``vitae run --model``.
* :class:`Reference` is the f32 reference model of a checkpoint (``vitae run --checkpoint``).
* :func:`inspect` describes a blob (``vitae inspect --json``).

Bad input raises :class:`VitaeError` (a :class:`ValueError`) whose message is the one the
``vitae`` command prints after ``error:``. Long work (loading, quantizing, running) releases the
GIL, so other Python threads keep running.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from . import _native

__all__ = ["Engine", "Reference", "VitaeError", "inspect", "quantize", "PRESETS", "__version__"]

VitaeError = _native.VitaeError
#: The preset architectures ``arch=`` takes.
PRESETS = tuple(_native.PRESETS)
__version__ = _native.__version__

PathLike = Union[str, "os.PathLike[str]"]
BlobLike = Union[bytes, bytearray, memoryview, PathLike]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _blob_bytes(blob: BlobLike) -> bytes:
    """The blob's bytes; a path is read the way ``vitae`` reads a blob file."""
    if isinstance(blob, (str, os.PathLike)):
        return _native.read_blob(os.fspath(blob))
    return bytes(blob)


def _array(x: Any, want: str) -> Tuple[str, list, bytes]:
    """``(dtype name, shape, C-order native-endian bytes)`` of ``x`` for the native module.

    ``want`` is ``"float32"`` (float64 is narrowed, as ``vitae`` narrows a float64 ``.npy``) or
    ``"uint8"``. Another dtype is passed by name only: the native module refuses it with the
    CLI's message.
    """
    a = np.asarray(x)
    if want == "float32" and a.dtype in _FLOATS:
        a = np.ascontiguousarray(a, dtype=np.float32)
    elif want == "uint8" and a.dtype == np.uint8:
        a = np.ascontiguousarray(a)
    else:
        return a.dtype.name, list(a.shape), b""
    return a.dtype.name, list(a.shape), a.tobytes()


def _logits(raw: bytes, batch: int, classes: int) -> np.ndarray:
    return np.frombuffer(raw, dtype=np.float32).reshape(batch, classes).copy()


class Engine:
    """A quantized blob on the host engine: the device's kernels, bit for bit.

    ``blob`` is the blob's bytes (from :func:`quantize` or a file) or a path to a ``.vblob``
    file. ``threads`` is how many worker threads a batch uses (default: one per core); the
    logits do not depend on it.
    """

    def __init__(self, blob: BlobLike, threads: Optional[int] = None) -> None:
        self._native = _native.Engine(_blob_bytes(blob), threads)

    @property
    def input_dtype(self) -> str:
        """``"f32"``: float32 (N, C, H, W) images; ``"u8"``: uint8 (N, H, W, C) pixels."""
        return self._native.input_dtype

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        """The shape of one image: (C, H, W) for f32 blobs, (H, W, C) for u8 ones."""
        c, h, w = self._native.input_chw
        return (h, w, c) if self.input_dtype == "u8" else (c, h, w)

    @property
    def classes(self) -> int:
        """Logits per image."""
        return self._native.classes

    @property
    def threads(self) -> int:
        """Worker threads a batch uses."""
        return self._native.threads

    @threads.setter
    def threads(self, value: int) -> None:
        self._native.threads = value

    def run(self, x: Any) -> np.ndarray:
        """Logits, float32 of shape (N, classes), for images ``x``.

        f32 blobs take float32 (N, C, H, W) or (C, H, W) images, normalized like the calibration
        data; blobs quantized with ``input="u8"`` take uint8 (N, H, W, C) or (H, W, C) pixels.
        """
        want = "uint8" if self.input_dtype == "u8" else "float32"
        raw, batch = self._native.run(*_array(x, want))
        return _logits(raw, batch, self.classes)

    def __repr__(self) -> str:
        return f"Engine(input {self.input_dtype} {self.input_shape}, {self.classes} classes)"


class Reference:
    """The f32 reference model of a checkpoint (``vitae run --checkpoint``).

    ``checkpoint`` is a ``.pth`` (``torch.save`` of a state_dict or a training checkpoint) or
    ``.safetensors`` file; the architecture is ``config``, a ``ViTAE_ViT_basic`` kwargs JSON file,
    or ``arch``, a preset name (see :data:`PRESETS`).
    """

    def __init__(
        self,
        checkpoint: PathLike,
        config: Optional[PathLike] = None,
        arch: Optional[str] = None,
    ) -> None:
        self._native = _native.Reference(
            os.fspath(checkpoint), None if config is None else os.fspath(config), arch
        )

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self._native.input_chw)

    @property
    def classes(self) -> int:
        """Outputs per image."""
        return self._native.classes

    def run(self, x: Any) -> np.ndarray:
        """Logits, float32 of shape (N, classes), for float32 (N, C, H, W) or (C, H, W) images."""
        raw, batch = self._native.run(*_array(x, "float32"))
        return _logits(raw, batch, self.classes)

    def __repr__(self) -> str:
        return f"Reference(input {self.input_shape}, {self.classes} classes)"


def quantize(
    checkpoint: PathLike,
    *,
    config: Optional[PathLike] = None,
    arch: Optional[str] = None,
    calib: Any,
    precision: str = "int8",
    calib_method: str = "auto",
    flash_budget: Optional[int] = None,
    max_logit_error: Optional[float] = None,
    max_calib: Optional[int] = None,
    input: str = "f32",
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    resize: Optional[int] = None,
    name: Optional[str] = None,
    board: Optional[str] = None,
    patch: Any = "auto",
) -> bytes:
    """Quantizes a checkpoint into a device blob, exactly as ``vitae quantize`` does.

    ``calib`` is float32 (N, C, H, W) images normalized like the training data, or a path to such
    a ``.npy`` or to a folder of PNG/JPEG images (resized with ``resize`` and normalized with
    ``mean``/``std``, default 0.5 per channel). ``precision`` is ``"int8"``, ``"fp16"``,
    ``"int4"`` (int4 weights in every linear layer and convolution), ``"int16-residual"`` (int8
    layers, the residual stream in int16) or ``"mixed"`` (chosen per layer by measurement: int4
    weights while the blob is over ``flash_budget`` bytes or within ``max_logit_error``, the
    logits' relative squared error against f32; int16 residual sums and fp16 layers where they
    lower the error most within the budget); ``calib_method`` ``"auto"``, ``"minmax"``, ``"percentile"`` or ``"mse"``;
    ``input="u8"`` makes a blob that takes uint8 HWC pixels and normalizes them with
    ``mean``/``std`` (required with an array, which is already normalized). ``name`` is stored in
    the blob (default: the checkpoint's file stem). ``board`` (a board of ``firmware/boards.rs``,
    e.g. ``"stm32n6570-dk"``) plans the arena over that board's memory regions, one part each, as
    ``vitae quantize --board`` does. ``patch`` runs the first cells in strips of rows, as
    ``vitae quantize --patch`` does: ``"auto"`` (only when the board's regions need it),
    ``"off"``, ``"smallest"`` or a number of rows. Returns the blob's bytes.
    """
    kwargs: Dict[str, Any] = {}
    if isinstance(calib, (str, os.PathLike)):
        kwargs["calib_path"] = os.fspath(calib)
    else:
        dtype, shape, data = _array(calib, "float32")
        kwargs.update(calib_dtype=dtype, calib_shape=shape, calib_data=data)
    return _native.quantize(
        os.fspath(checkpoint),
        config=None if config is None else os.fspath(config),
        arch=arch,
        precision=precision,
        calib_method=calib_method,
        flash_budget=flash_budget,
        max_logit_error=max_logit_error,
        max_calib=max_calib,
        resize=resize,
        mean=None if mean is None else [float(v) for v in np.atleast_1d(mean)],
        std=None if std is None else [float(v) for v in np.atleast_1d(std)],
        input=input,
        name=name,
        board=board,
        patch=str(patch),
        **kwargs,
    )


def inspect(blob: BlobLike) -> Dict[str, Any]:
    """What a blob holds, as ``vitae inspect --json`` tells it: the totals (``model``,
    ``precision``, ``flash_bytes``, ``arena_bytes``, ``macs``, ``input_layout``, …) and
    ``layers``, one dict per op (``op``, ``name``, ``dtype``, ``input``, ``output``,
    ``weight_bytes``, ``macs``, ``arena_offset``, …). ``blob`` is bytes or a path."""
    import json

    layers, totals = _native.inspect_json(_blob_bytes(blob))
    out = json.loads(totals)
    out["layers"] = [json.loads(line) for line in layers]
    return out
