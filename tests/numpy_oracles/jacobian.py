"""Oracles of assignment 05's references: ``ste_utils``' Jacobians (``tf.GradientTape.jacobian``)
and the tape's gradients, as a student hands them in."""


def _straight_through():
    import ste_utils

    return ste_utils.straight_through_jacobian


def _ste_sign():
    import tensorflow as tf

    import ste_utils

    def ste_sign_jacobian(x, clip_value=1.0):
        return ste_utils.jacobian(lambda t: ste_utils.ste_sign(t, clip_value=clip_value), tf.reshape(x, [-1]))[0]
    return ste_sign_jacobian


def _chain_rule():
    import tensorflow as tf

    import ste_utils

    def ste_input_gradients(x, r, upstream):
        with tf.GradientTape() as tape:
            tape.watch([x, r])
            out = ste_utils.straight_through(x, r)
        return tape.gradient(out, [x, r], output_gradients=upstream,
                             unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return ste_input_gradients


def _question():
    """(dL/dr, dL/dx) for x = 0.7, r = round(x), out = straight_through(x, r), L = out**2."""
    import tensorflow as tf

    import ste_utils

    x = tf.constant(0.7)
    r = tf.round(x)
    with tf.GradientTape() as tape:
        tape.watch([x, r])
        loss = ste_utils.straight_through(x, r) ** 2
    d_x, d_r = tape.gradient(loss, [x, r], unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return float(d_r), float(d_x)


ORACLES = {
    "jacobian/straight_through": _straight_through,
    "jacobian/ste_sign": _ste_sign,
    "jacobian/chain_rule": _chain_rule,
    "jacobian/gradient_reaching_result": lambda: _question()[0],
    "jacobian/gradient_reaching_x": lambda: _question()[1],
}
