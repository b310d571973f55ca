"""Plain-data encoding of arrays for the trust boundary.

Everything that crosses the sandbox boundary is JSON built from dicts, lists, strings and
numbers. Arrays travel as ``{"dtype": str, "shape": [int], "data": [number | "nan" | "inf" |
"-inf"]}``; decoding validates types and sizes and never evaluates anything.
"""

from __future__ import annotations

import math

import numpy as np

MAX_ELEMENTS = 1_000_000
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
_ALLOWED_DTYPES = FLOAT_DTYPES + ("int32", "int64", "bool", "uint8")


class EvidenceError(ValueError):
    """Evidence that is not well-formed plain data."""


def _encode_number(v):
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def encode_array(value) -> dict:
    """Encode an array-like (NumPy, TensorFlow tensor, list) as plain data."""
    dtype = getattr(value, "dtype", None)
    dtype_name = getattr(dtype, "name", None) or (str(dtype) if dtype is not None else None)
    if hasattr(value, "numpy") and callable(value.numpy):
        value = value.numpy()
    arr = np.asarray(value)
    if dtype_name is None:
        dtype_name = arr.dtype.name
    if arr.dtype.kind == "O":
        raise EvidenceError(f"expected numbers, got an array of Python objects ({type(value).__name__})")
    if arr.size > MAX_ELEMENTS:
        raise EvidenceError(f"array of {arr.size} elements is larger than {MAX_ELEMENTS}")
    data = arr.astype(np.float64).ravel().tolist()
    return {"dtype": str(dtype_name), "shape": [int(s) for s in arr.shape],
            "data": [_encode_number(v) for v in data]}


def _decode_number(v):
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise EvidenceError(f"not a number: {type(v).__name__}")
    if isinstance(v, str):
        if v not in ("nan", "inf", "-inf"):
            raise EvidenceError(f"not a number: {v[:20]!r}")
        return float(v)
    return float(v)


def decode_array(obj) -> tuple[np.ndarray, str]:
    """Decode plain data into ``(float64 array, dtype name)``; raise EvidenceError if malformed."""
    if not isinstance(obj, dict) or set(obj) != {"dtype", "shape", "data"}:
        raise EvidenceError("an array must be a dict with keys dtype, shape and data")
    dtype, shape, data = obj["dtype"], obj["shape"], obj["data"]
    if not isinstance(dtype, str) or len(dtype) > 32:
        raise EvidenceError("dtype must be a short string")
    if not isinstance(shape, list) or len(shape) > 8 or not all(
            isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_ELEMENTS for s in shape):
        raise EvidenceError("shape must be a list of at most 8 non-negative integers")
    if not isinstance(data, list) or len(data) != int(np.prod(shape, dtype=np.int64)):
        raise EvidenceError("data must be a flat list with prod(shape) elements")
    values = np.array([_decode_number(v) for v in data], dtype=np.float64).reshape(shape)
    return values, dtype
