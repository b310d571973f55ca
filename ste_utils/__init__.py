"""ste_utils: the checked straight-through-estimator implementation the course is graded against.

Modules, one idea each:
    estimators  straight_through (stop_gradient idiom) and the ste(forward, proxy) factory
    proxies     backward proxies (identity, relu, clipped_relu, hardtanh) with their derivatives
    quantizers  ste_sign, ste_heaviside, ste_round, ste_quantize, ste_argmax (tf.custom_gradient)
    layers      thin, serializable Keras 3 layers over the quantizers
    jacobian    Jacobians via tf.GradientTape.jacobian
    plotting    forward/backward plots; data: offline digits; training: small models and fit
"""

import os as _os

# TensorFlow reads these when it is first imported; both are needed to silence its log lines.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from ste_utils.estimators import IDIOMS, straight_through, ste  # noqa: E402
from ste_utils.proxies import PROXIES, Proxy, get_proxy  # noqa: E402
from ste_utils.quantizers import (  # noqa: E402
    binarize, heaviside, one_hot_argmax, quantize,
    ste_argmax, ste_heaviside, ste_quantize, ste_round, ste_sign,
)
from ste_utils.jacobian import jacobian, straight_through_jacobian  # noqa: E402
from ste_utils.layers import (  # noqa: E402
    BinaryDense, LatentClip, SteActivation, SteHeaviside, SteQuantize, SteRound, SteSign,
)

__version__ = "0.1.0"

__all__ = [
    "straight_through", "ste", "IDIOMS", "PROXIES", "Proxy", "get_proxy",
    "binarize", "heaviside", "quantize", "one_hot_argmax",
    "ste_sign", "ste_heaviside", "ste_round", "ste_quantize", "ste_argmax",
    "jacobian", "straight_through_jacobian",
    "SteSign", "SteHeaviside", "SteRound", "SteQuantize", "SteActivation", "LatentClip",
    "BinaryDense",
]
