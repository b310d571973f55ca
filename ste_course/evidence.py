"""Plain-data encoding of arrays for the trust boundary.

Everything that crosses the sandbox boundary is JSON built from dicts, lists, strings and
numbers. An array travels as its raw bytes::

    {"dtype": "float32", "shape": [2, 3], "bytes": "<base64 of the little-endian elements>"}

``dtype`` is the array's own dtype name (what the checks compare); the bytes are stored in that
dtype when it is one of :data:`STORED` (little-endian; ``bfloat16`` as its 16 bits), else as
float64 (the values every check compares). A float32 element is 4 bytes (about 5.3 characters of
JSON) instead of about 20 characters of decimal text, NaN and infinities need no spelling, and
encoding and decoding are one memory copy rather than a Python object per element.

Decoding is part of the trust boundary: :func:`decode_array` checks the keys, the dtype name, the
shape (at most :data:`MAX_DIMS` dimensions, at most :data:`MAX_ELEMENTS` elements, counted in
Python integers so nothing wraps) and the exact length of the base64 text *before* decoding it,
and raises :class:`EvidenceError` (a ``ValueError``) and nothing else on any input.
"""

from __future__ import annotations

import base64
import binascii
import math

import numpy as np

MAX_ELEMENTS = 1_000_000
MAX_DIMS = 8
# dtype name -> how its elements are stored on the wire (anything else: as float64)
STORED = {"float16": "<f2", "bfloat16": "<u2", "float32": "<f4", "float64": "<f8", "int32": "<i4",
          "int64": "<i8", "uint8": "|u1", "bool": "|u1"}


class EvidenceError(ValueError):
    """Evidence that is not well-formed plain data."""


def _wire(dtype_name: str) -> np.dtype:
    return np.dtype(STORED.get(dtype_name, "<f8"))


def _to_wire(arr: np.ndarray, dtype_name: str) -> np.ndarray:
    """``arr`` as the elements sent for ``dtype_name`` (exact for values of that dtype)."""
    if dtype_name == "bfloat16":
        import ml_dtypes

        if arr.dtype != ml_dtypes.bfloat16:
            arr = arr.astype(ml_dtypes.bfloat16)
        return arr.view(np.uint16).astype("<u2", copy=False)
    if dtype_name == "bool":
        return (arr != 0).astype("|u1")
    return arr.astype(_wire(dtype_name), copy=False)


def encode_array(value, dtype: str | None = None) -> dict:
    """Encode an array-like (NumPy, TensorFlow tensor, list) as plain data.

    Args:
        value: the array.
        dtype: the dtype name to report (default: ``value``'s own), e.g. to re-encode float64
            values that were decoded from a float32 array.

    Raises:
        EvidenceError: ``value`` holds Python objects or more than :data:`MAX_ELEMENTS` elements.
    """
    found = getattr(value, "dtype", None)
    dtype_name = dtype or getattr(found, "name", None) or (str(found) if found is not None else None)
    if hasattr(value, "numpy") and callable(value.numpy):
        value = value.numpy()
    arr = np.asarray(value)
    dtype_name = str(dtype_name or arr.dtype.name)
    if arr.dtype.kind == "O":
        raise EvidenceError(f"expected numbers, got an array of Python objects ({type(value).__name__})")
    if arr.size > MAX_ELEMENTS:
        raise EvidenceError(f"array of {arr.size} elements is larger than {MAX_ELEMENTS}")
    if len(dtype_name) > 32 or arr.ndim > MAX_DIMS:
        raise EvidenceError(f"dtype name or rank out of bounds: dtype={dtype_name[:40]!r}, ndim={arr.ndim}")
    data = np.ascontiguousarray(_to_wire(arr, dtype_name)).tobytes()
    return {"dtype": dtype_name, "shape": [int(s) for s in arr.shape], "bytes": base64.b64encode(data).decode("ascii")}


def _elements(shape) -> int:
    if not isinstance(shape, list) or len(shape) > MAX_DIMS:
        raise EvidenceError(f"shape must be a list of at most {MAX_DIMS} integers")
    count = 1
    for s in shape:
        if type(s) is not int or not 0 <= s <= MAX_ELEMENTS:
            raise EvidenceError(f"shape must be a list of integers in [0, {MAX_ELEMENTS}]")
        count *= s
        if count > MAX_ELEMENTS:
            raise EvidenceError(f"an array of more than {MAX_ELEMENTS} elements")
    return count


def decode_array(obj) -> tuple[np.ndarray, str]:
    """Decode plain data into ``(float64 array, dtype name)``.

    Raises:
        EvidenceError: ``obj`` is not an array as :func:`encode_array` writes it (the only
            exception, whatever ``obj`` is).
    """
    if not isinstance(obj, dict) or len(obj) != 3 or set(obj) != {"dtype", "shape", "bytes"}:
        raise EvidenceError("an array must be a dict with keys dtype, shape and bytes")
    dtype, text = obj["dtype"], obj["bytes"]
    if type(dtype) is not str or not 0 < len(dtype) <= 32:
        raise EvidenceError("dtype must be a short string")
    count = _elements(obj["shape"])
    wire = _wire(dtype)
    nbytes = count * wire.itemsize
    if type(text) is not str or len(text) != 4 * math.ceil(nbytes / 3):
        raise EvidenceError(f"bytes must be the base64 text of {nbytes} bytes (shape {obj['shape']}, {dtype})")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise EvidenceError("bytes is not base64 text") from None
    if len(data) != nbytes:
        raise EvidenceError(f"bytes holds {len(data)} bytes, not {nbytes}")
    raw = np.frombuffer(data, dtype=wire)
    if dtype == "bfloat16":  # the upper 16 bits of a float32
        values = (raw.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    elif dtype == "bool":
        values = (raw != 0).astype(np.float64)
    else:
        values = raw.astype(np.float64)
    return values.reshape(obj["shape"]), dtype
