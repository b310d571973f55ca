"""Proxy functions for the backward pass of a straight-through estimator.

An STE keeps a quantizer ``q`` in the forward pass and, in the backward pass, multiplies the
upstream gradient by the derivative of a *proxy* ``p`` instead of by ``q'`` (which is 0 almost
everywhere). Each proxy here is stored with its derivative written out, including the value
chosen at every kink, so the convention is explicit and tested:

=================  =========================  ==================================
name               proxy p(x)                 derivative p'(x) used backward
=================  =========================  ==================================
``identity``       x                          1
``relu``           max(x, 0)                  1{x > 0}        (0 at x = 0)
``clipped_relu``   min(max(x, 0), 1)          1{0 < x <= 1}   (0 at 0, 1 at 1)
``hardtanh``       clip(x, -1, 1)             1{|x| <= 1}     (1 at x = +-1)
=================  =========================  ==================================

The ``relu``/``clipped_relu``/``identity`` trio is the one compared by Yin et al. (2019),
arXiv:1903.05662; ``hardtanh`` is the clipped STE of BinaryNet (Hubara et al., 2016,
arXiv:1602.02830). The conventions at the kinks agree with TensorFlow's own gradients of the
formulas in the middle column, so both STE idioms give the same numbers. Where p'(x) = 0 the
gradient is 0 even for an infinite or NaN upstream gradient (a select, not ``upstream * 0``),
in both idioms: the functions are built from ``tf.where``, ``tf.minimum`` and
``tf.clip_by_value``, whose gradients are selects (``tf.nn.relu``'s is a product).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import tensorflow as tf


__all__ = ["Proxy", "PROXIES", "get_proxy", "pass_where", "times_derivative"]


class Proxy(NamedTuple):
    """A proxy function and its derivative (both elementwise, dtype-preserving)."""

    function: Callable[[tf.Tensor], tf.Tensor]
    derivative: Callable[[tf.Tensor], tf.Tensor]


def _indicator(condition: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    return tf.cast(condition, like.dtype)


def pass_where(window, upstream):
    """The upstream gradient where ``window`` holds and 0 elsewhere: a select, not a product.

    ``upstream * mask`` would turn an infinite or NaN upstream gradient outside the window into
    NaN (inf * 0); the documented gradient there is 0, as Larq's ``tf.where`` gives. Inside the
    window the upstream passes unchanged, NaN and infinities included. ``window=None``: no window.
    """
    if window is None:
        return upstream
    return tf.where(window, upstream, tf.zeros_like(upstream))


def times_derivative(upstream, derivative):
    """upstream * p'(x), with 0 wherever p'(x) = 0 (a select, see :func:`pass_where`)."""
    return pass_where(tf.not_equal(derivative, 0), upstream * derivative)


PROXIES: dict[str, Proxy] = {
    "identity": Proxy(
        function=lambda x: tf.identity(x),
        derivative=lambda x: tf.ones_like(x),
    ),
    "relu": Proxy(
        # tf.where, not tf.nn.relu: ReluGrad multiplies by the 0/1 mask (inf upstream -> NaN);
        # the gradient of a select is a select, so autodiff of p keeps 0 outside too.
        function=lambda x: tf.where(x > 0, x, tf.zeros_like(x)),
        derivative=lambda x: _indicator(x > 0, x),
    ),
    "clipped_relu": Proxy(
        # tf.minimum passes the gradient to its first argument on ties, so the kink at 1 gets 1.
        function=lambda x: tf.where(x > 0, tf.minimum(x, tf.ones_like(x)), tf.zeros_like(x)),
        derivative=lambda x: _indicator((x > 0) & (x <= 1), x),
    ),
    "hardtanh": Proxy(
        function=lambda x: tf.clip_by_value(x, -tf.ones_like(x), tf.ones_like(x)),
        derivative=lambda x: _indicator(tf.abs(x) <= 1, x),
    ),
}


def get_proxy(name: str) -> Proxy:
    """Look up a named proxy; unknown names raise and list the known ones."""
    if not isinstance(name, str):
        raise TypeError(f"proxy must be a name or a callable. Received: proxy={name!r}")
    try:
        return PROXIES[name]
    except KeyError:
        known = ", ".join(repr(k) for k in PROXIES)
        raise ValueError(f"Unknown proxy. Known proxies: {known}. Received: proxy={name!r}") from None
