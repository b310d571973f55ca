"""References of the elementwise straight-through specs (assignments 03, 04 and 06), in NumPy.

Each function takes a case ``{"x", "upstream", **params}`` and returns what ``ste_utils`` gives
in TensorFlow, in the dtype and shape of ``x``: the forward value, or the gradient for the
case's upstream gradient. Every result is a select between exact values (+-1, a level of the
quantizer's table, the upstream gradient or 0), so it equals TensorFlow's bit for bit once the
comparisons see the inputs as TensorFlow's CPU kernels do (:func:`as_tensorflow_sees`).
"""

from __future__ import annotations

import numpy as np


def as_tensorflow_sees(x: np.ndarray) -> np.ndarray:
    """``x`` with subnormal float32 and float64 values read as 0, as TensorFlow's CPU kernels
    read them (denormals-are-zero): there ``-1e-45 >= 0`` is True. Float16 is computed through
    float32, where its subnormals are normal numbers, so they stay."""
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        return x
    return np.where(np.abs(x) < np.finfo(x.dtype).tiny, x.dtype.type(0), x)


def pass_where(window: np.ndarray, upstream) -> np.ndarray:
    """The upstream gradient where ``window`` holds, 0 elsewhere (a select, as
    ``ste_utils.proxies.pass_where``)."""
    upstream = np.asarray(upstream)
    return np.where(window, upstream, upstream.dtype.type(0))


# ----------------------------------------------------------------------------- ste_sign
def ste_sign_value(case) -> dict:
    """``ste_utils.ste_sign`` forward: q(x) = +1 if x >= 0 else -1 (q(0) = +1, NaN gives -1)."""
    x = np.asarray(case["x"])
    return {"value": np.where(as_tensorflow_sees(x) >= 0, x.dtype.type(1), x.dtype.type(-1))}


def ste_sign_gradient(case) -> dict:
    """``ste_utils.ste_sign`` backward: dL/dx = upstream * 1{|x| <= c}, boundary included, with c
    the clip value rounded to x's dtype (NumPy's rounding); clip_value None: no window."""
    x = as_tensorflow_sees(case["x"])
    clip_value = case.get("clip_value", 1.0)
    if clip_value is None:
        return {"gradient": np.array(case["upstream"])}
    return {"gradient": pass_where(np.abs(x) <= np.asarray(clip_value, x.dtype), case["upstream"])}


# ----------------------------------------------------------------------------- k-bit quantizer on [0, 1]
def quantize(x: np.ndarray, bits: int) -> np.ndarray:
    """``ste_utils.quantize``: round(clip(x, 0, 1) * n) / n with n = 2**bits - 1.

    The product is taken in x's dtype (float16 products are exact in float32, so one rounding
    to float16 is TensorFlow's), rounded half to even, and the level i / n read from the table
    of quotients divided in float64 and rounded once to x's dtype. NaN stays NaN.
    """
    x = np.asarray(x)
    n = 2 ** int(bits) - 1
    seen = as_tensorflow_sees(x)
    nan = np.isnan(seen)
    clipped = np.clip(np.where(nan, x.dtype.type(0), seen), x.dtype.type(0), x.dtype.type(1))
    index = np.clip(np.round(clipped * x.dtype.type(n)), 0, n).astype(np.int64)
    levels = (np.arange(n + 1, dtype=np.float64) / n).astype(x.dtype)
    return np.where(nan, x, levels[index])


def quantize_value(case) -> dict:
    """``ste_utils.ste_quantize`` forward (:func:`quantize`)."""
    return {"value": quantize(case["x"], case["bits"])}


def quantize_gradient(case) -> dict:
    """``ste_utils.ste_quantize`` backward: dL/dx = upstream * 1{0 <= x <= 1}, edges included."""
    x = as_tensorflow_sees(case["x"])
    return {"gradient": pass_where((x >= 0) & (x <= 1), case["upstream"])}


# ----------------------------------------------------------------------------- 2-bit quantizer, chosen proxy
# p'(x) of each named proxy of ste_utils.proxies, as a window where it is 1 (0 elsewhere).
PROXY_WINDOWS = {
    "identity": lambda x: np.ones(x.shape, bool),
    "relu": lambda x: x > 0,
    "clipped_relu": lambda x: (x > 0) & (x <= 1),
    "hardtanh": lambda x: np.abs(x) <= 1,
}


def quantized_relu_value(case) -> dict:
    """``ste_utils.ste(quantize(., bits=2), proxy)`` forward: the 2-bit quantizer."""
    return {"value": quantize(case["x"], 2)}


def quantized_relu_gradient(case) -> dict:
    """``ste_utils.ste(quantize(., bits=2), proxy)`` backward: dL/dx = upstream * p'(x), 0 wherever
    p'(x) = 0 (a select); p' is 0 or 1, so elsewhere it is the upstream gradient itself."""
    x = as_tensorflow_sees(case["x"])
    return {"gradient": pass_where(PROXY_WINDOWS[case["proxy"]](x), case["upstream"])}
