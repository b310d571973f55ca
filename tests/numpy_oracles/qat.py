"""Oracles of assignment 07's references: ``ste_utils``' LSQ and PACT as a student hands them in,
and fake quantization written in TensorFlow as the assignment asks (the spec refuses TensorFlow's
own fake-quantization ops; ``tests/test_numpy_fake_quant.py`` checks the reference against them)."""


def _ste_utils(name):
    def make():
        import ste_utils

        return getattr(ste_utils, name)
    return make


def _fake_quant():
    """``fake_quant_with_min_max_vars`` by hand: TensorFlow's nudge in float32 (zero point rounded
    half away from zero), levels floor(t + 1/2), the window's bounds included."""
    import tensorflow as tf

    def fake_quant(x, min_value, max_value, bits, narrow_range=False):
        x = tf.convert_to_tensor(x)
        q_min, q_max = (1.0 if narrow_range else 0.0), 2.0 ** bits - 1

        @tf.custom_gradient
        def _fake_quant(x, lo, hi):
            scale = (hi - lo) / (q_max - q_min)
            zero = q_min - lo / scale
            zero = tf.clip_by_value(tf.sign(zero) * tf.floor(tf.abs(zero) + 0.5), q_min, q_max)
            n_lo, n_hi = (q_min - zero) * scale, (q_max - zero) * scale
            levels = tf.floor((tf.clip_by_value(x, n_lo, n_hi) - n_lo) / scale + 0.5)

            def grad(upstream):
                nothing = tf.zeros_like(upstream)
                return (tf.where((x >= n_lo) & (x <= n_hi), upstream, nothing),
                        tf.reduce_sum(tf.where(x < n_lo, upstream, nothing)),
                        tf.reduce_sum(tf.where(x > n_hi, upstream, nothing)))

            return levels * scale + n_lo, grad

        return _fake_quant(x, tf.convert_to_tensor(min_value, x.dtype), tf.convert_to_tensor(max_value, x.dtype))

    return fake_quant


ORACLES = {
    "lsq/value": _ste_utils("lsq_quantize"),
    "lsq/x_gradient": _ste_utils("lsq_quantize"),
    "lsq/step_gradient": _ste_utils("lsq_quantize"),
    "pact/quantize": _ste_utils("pact_quantize"),
    "fake_quant/value": _fake_quant,
    "fake_quant/gradients": _fake_quant,
}
