"""ste_utils: the checked straight-through-estimator implementation the course is graded against.

Modules, one idea each:
    estimators  straight_through (stop_gradient idiom) and the ste(forward, proxy) factory
    proxies     backward proxies (identity, relu, clipped_relu, hardtanh) with their derivatives
    quantizers  ste_sign, ste_heaviside, ste_round, ste_quantize, ste_argmax (tf.custom_gradient);
                lsq_quantize, lsq_plus_quantize, pact_quantize (learned step size / offset /
                clipping level), dorefa_weight_quantize
    discrete    stochastic_binary, stochastic_sign, reinforce_gradient, optimal_baseline,
                hard_sigmoid, gumbel_softmax_st, vector_quantize, the moving-average codebook
                (EMACodebook, ema_codebook, ema_codebook_update, restart_dead_codes), fsq_quantize
                and fsq_indices: the STE for discrete choices
    layers      thin, serializable Keras 3 layers over the quantizers (LsqQuantize, LsqPlusQuantize,
                VectorQuantizer)
    integer     int8 dense-layer inference as TFLite computes it (NumPy): multiplier, requantization
    deploy      freeze a QAT network's ranges, convert it to a full-integer LiteRT model, run it
    jacobian    Jacobians via tf.GradientTape.jacobian
    plotting    forward/backward plots; data: offline digits; training: small models and fit

Importing the package changes no process-wide setting (no environment variables): the course's
entry points (Makefile, binder/start, ``ste-course``, the grading sandbox) set
TF_CPP_MIN_LOG_LEVEL and TF_ENABLE_ONEDNN_OPTS themselves.
"""

from ste_utils.estimators import IDIOMS, straight_through, ste
from ste_utils.proxies import PROXIES, Proxy, get_proxy
from ste_utils.quantizers import (
    binarize, heaviside, one_hot_argmax, quantize,
    ste_argmax, ste_heaviside, ste_quantize, ste_round, ste_sign,
    dorefa_weight_quantize, lsq_grad_scale, lsq_levels, lsq_plus_quantize, lsq_quantize,
    pact_quantize,
)
from ste_utils.jacobian import jacobian, straight_through_jacobian
from ste_utils.discrete import (
    EMACodebook, VQResult, ema_codebook, ema_codebook_update, fsq_indices, fsq_quantize, gumbel_noise,
    gumbel_softmax_st, hard_sigmoid, optimal_baseline, reinforce_gradient, restart_dead_codes,
    stochastic_binary, stochastic_sign, vector_quantize,
)
from ste_utils.integer import int8_dense, multiply_by_quantized_multiplier, quantize_multiplier, requantize
from ste_utils.layers import (
    BinaryDense, LatentClip, LsqPlusQuantize, LsqQuantize, SteActivation, SteHeaviside, SteQuantize,
    SteRound, SteSign, VectorQuantizer,
)

__version__ = "0.1.0"

__all__ = [
    "straight_through", "ste", "IDIOMS", "PROXIES", "Proxy", "get_proxy",
    "binarize", "heaviside", "quantize", "one_hot_argmax",
    "ste_sign", "ste_heaviside", "ste_round", "ste_quantize", "ste_argmax",
    "lsq_levels", "lsq_grad_scale", "lsq_quantize", "lsq_plus_quantize", "pact_quantize",
    "dorefa_weight_quantize",
    "jacobian", "straight_through_jacobian",
    "SteSign", "SteHeaviside", "SteRound", "SteQuantize", "SteActivation", "LatentClip",
    "BinaryDense", "LsqQuantize", "LsqPlusQuantize", "VectorQuantizer",
    "stochastic_binary", "hard_sigmoid", "stochastic_sign", "reinforce_gradient",
    "gumbel_noise", "gumbel_softmax_st", "VQResult", "vector_quantize", "optimal_baseline",
    "EMACodebook", "ema_codebook", "ema_codebook_update", "restart_dead_codes", "fsq_quantize", "fsq_indices",
    "quantize_multiplier", "multiply_by_quantized_multiplier", "requantize", "int8_dense",
]
