"""Oracles of assignment 08's references, built from ``ste_utils`` as a student would hand them in."""


def _gumbel_softmax_st():
    """The straight-through Gumbel-softmax with the noise given: ``ste_argmax`` of the noisy
    logits over tau (one-hot of the argmax forward, the softmax's gradient at tau backward)."""
    import ste_utils

    return lambda logits, noise, temperature: ste_utils.ste_argmax((logits + noise) / temperature)


def _vector_quantize():
    import ste_utils

    return ste_utils.vector_quantize


def _reinforce_gradient():
    """``ste_utils.reinforce_gradient`` with f(b) [K] as a column against the samples [K, n]."""
    import ste_utils

    return lambda f_values, samples, p, baseline: ste_utils.reinforce_gradient(f_values[:, None], samples, p, baseline)


ORACLES = {
    "gumbel_st/value": _gumbel_softmax_st,
    "vq/forward": _vector_quantize,
    "vq/gradients": _vector_quantize,
    "reinforce/bias": _reinforce_gradient,
    "reinforce/variance": _reinforce_gradient,
}
