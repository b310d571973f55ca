"""Assignment 05's references: the Jacobians of the straight-through estimator in closed form
(what ``ste_utils.jacobian``, a ``tf.GradientTape.jacobian``, gives; every entry is 0 or 1, or
the upstream gradient passed on unchanged, so they are exact in every dtype).

* out = x + sg(r - x) (``ste_utils.straight_through``): d out / d x = I, d out / d r = 0, so
  the Jacobian with respect to [x, r] (flattened to length n) is the (n, 2n) matrix [I | 0], and
  given dL/dout = upstream: dL/dx = upstream, dL/dr = 0.
* ``ste_utils.ste_sign(x, clip_value)``: d out / d x = diag(1{|x| <= c}), c the float of x's
  dtype nearest to ``clip_value`` (as ``ste_utils.quantizers._clip_window`` rounds it).
* The interpretation question (x = 0.7, r = round(x) = 1, out = x + sg(r - x) = 1, L = out**2):
  dL/dout = 2 out = 2, so dL/dr = 2 * 0 = 0 and dL/dx = 2 * 1 = 2.
"""

from __future__ import annotations

import numpy as np


def straight_through(case) -> dict:
    """``jacobian/straight_through``: [I | 0], shape (n, 2n), in x's dtype."""
    x = np.asarray(case["x"])
    n = x.size
    return {"jacobian": np.concatenate([np.eye(n, dtype=x.dtype), np.zeros((n, n), x.dtype)], axis=1)}


def ste_sign(case) -> dict:
    """``jacobian/ste_sign``: diag(1{|x| <= clip_value}) over the flattened x, in x's dtype."""
    x = np.asarray(case["x"]).ravel()
    c = np.asarray(case["clip_value"], dtype=x.dtype)
    return {"jacobian": np.diag((np.abs(x) <= c).astype(x.dtype))}


def chain_rule(case) -> dict:
    """``jacobian/chain_rule``: dL/dx = upstream (the identity block), dL/dr = 0 (the zero block)."""
    upstream = np.asarray(case["upstream"])
    return {"dL/dx": upstream.copy(), "dL/dr": np.zeros_like(np.asarray(case["r"]))}


def gradient_reaching_result(case) -> dict:
    """``jacobian/gradient_reaching_result``: dL/dr = dL/dout * 0 = 0."""
    return {"answer": np.float64(0.0)}


def gradient_reaching_x(case) -> dict:
    """``jacobian/gradient_reaching_x``: dL/dx = dL/dout * 1 = 2 out = 2 round(0.7) = 2."""
    return {"answer": np.float64(2.0)}
