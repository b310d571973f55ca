"""The straight-through estimator in its two TensorFlow idioms.

1. ``stop_gradient``:  ``out = x + stop_gradient(result - x)``.
   Forward:  out = result (up to floating-point cancellation, see below).
   Backward: d out / d x = I,  d out / d result = 0.
2. ``tf.custom_gradient``: the forward value is ``result`` exactly and the backward function is
   written out by hand.

Cancellation: ``x + (r - x)`` is computed in the dtype of ``x``. When |x| is much larger than
|r|, ``r - x`` rounds to ``-x`` and the sum is 0 instead of ``r``. For r = 1 this starts where
the spacing of floats around x exceeds 1: just above |x| = 2048 in float16 and around
|x| = 2**24 (about 1.7e7) in float32; x = 3000 (float16) and x = 1e8 (float32) give 0. Gradients are
unaffected. The quantizers in :mod:`ste_utils.quantizers` therefore use ``tf.custom_gradient``.
"""

from __future__ import annotations

from typing import Callable, Union

import tensorflow as tf

from ste_utils._validation import as_float_tensor
from ste_utils.proxies import PROXIES, get_proxy, times_derivative

ProxyArg = Union[str, Callable[[tf.Tensor], tf.Tensor]]
IDIOMS = ("custom_gradient", "stop_gradient")


def straight_through(x, result):
    """Return ``result`` in the forward pass and pass the gradient straight to ``x``.

    Forward:  out = x + sg(result - x) = result  (exact unless |x| >> |result|, see module doc)
    Backward: d out / d x = I  and  d out / d result = 0, i.e. the Jacobian of
              out with respect to [x, result] is [I, 0].

    Args:
        x: floating-point tensor, the input the gradient should reach.
        result: tensor of the same shape and dtype, typically a quantized ``x``.

    Returns:
        A tensor with the value of ``result`` and the gradient of ``x``.

    Example:
        >>> x = tf.constant([-0.4, 0.7])
        >>> straight_through(x, tf.round(x)).numpy()
        array([0., 1.], dtype=float32)
    """
    x = as_float_tensor(x, "x")
    result = as_float_tensor(result, "result")
    if result.dtype != x.dtype:
        raise TypeError(
            "result must have the dtype of x. "
            f"Received: x.dtype={x.dtype.name}, result.dtype={result.dtype.name}"
        )
    if x.shape.is_fully_defined() and result.shape.is_fully_defined() and x.shape != result.shape:
        raise ValueError(
            f"result must have the shape of x. Received: x.shape={x.shape}, result.shape={result.shape}"
        )
    return x + tf.stop_gradient(result - x)


def _proxy_functions(proxy: ProxyArg):
    """(proxy function, derivative or None) for a proxy name or callable."""
    if callable(proxy):
        return proxy, None
    named = get_proxy(proxy)
    return named.function, named.derivative


def ste(forward: Callable[[tf.Tensor], tf.Tensor], proxy: ProxyArg = "identity",
        idiom: str = "custom_gradient") -> Callable[[tf.Tensor], tf.Tensor]:
    """Build a straight-through estimator from a forward function and a proxy.

    Forward:  y = forward(x)
    Backward: dL/dx := dL/dy * p'(x), with p the proxy (see :mod:`ste_utils.proxies` for the
              named ones: ``"identity"``, ``"relu"``, ``"clipped_relu"``, ``"hardtanh"``).
              A zero p'(x) gives 0 even for an infinite or NaN upstream (a select). A callable
              proxy is differentiated by autodiff, so its non-finite behaviour is TensorFlow's
              (``tf.nn.relu``'s gradient, a product, turns inf * 0 into NaN).

    Args:
        forward: elementwise function applied in the forward pass (e.g. ``tf.round``).
        proxy: a proxy name or a differentiable callable.
        idiom: ``"custom_gradient"`` (exact forward value) or ``"stop_gradient"``, which
            computes ``p(x) + stop_gradient(forward(x) - p(x))`` and so inherits the
            cancellation described in the module docstring.

    Returns:
        A function of one tensor.

    Example:
        >>> ste_round_relu = ste(tf.round, proxy="relu")
    """
    if not callable(forward):
        raise TypeError(f"forward must be callable. Received: forward={forward!r}")
    if idiom not in IDIOMS:
        raise ValueError(f"idiom must be one of {IDIOMS}. Received: idiom={idiom!r}")
    proxy_fn, derivative = _proxy_functions(proxy)
    proxy_name = proxy if isinstance(proxy, str) else getattr(proxy, "__name__", "proxy")

    if idiom == "stop_gradient":
        def estimator(x):
            x = as_float_tensor(x, "x")
            p = proxy_fn(x)
            return p + tf.stop_gradient(forward(x) - p)
    else:
        def estimator(x):
            x = as_float_tensor(x, "x")

            @tf.custom_gradient
            def _ste(x):
                def grad(upstream):
                    if derivative is not None:
                        return times_derivative(upstream, derivative(x))
                    with tf.GradientTape() as tape:
                        tape.watch(x)
                        p = proxy_fn(x)
                    return tape.gradient(p, x, output_gradients=upstream)
                return forward(x), grad

            return _ste(x)

    forward_name = getattr(forward, "__name__", "forward")
    estimator.__name__ = f"ste_{forward_name}_{proxy_name}"
    estimator.__doc__ = (f"STE: forward {forward_name}(x); backward upstream * d{proxy_name}/dx "
                         f"({idiom} idiom).")
    return estimator


__all__ = ["straight_through", "ste", "PROXIES", "IDIOMS"]
