"""References of assignment 08's specs (Gumbel-softmax, vector quantization, REINFORCE), in NumPy.

Each function takes a case of :mod:`ste_course.specs.discrete` and returns what the checked
implementation gives in TensorFlow, in the case's dtypes and shapes:

* ``gumbel_value``: ``ste_utils.one_hot_argmax(logits + noise)``, the sum in the logits' dtype
  (exact: the same bits as TensorFlow's); ``gumbel_st/gradient`` keeps TensorFlow's reference
  (the softmax's gradient through Eigen's vectorised exp, which NumPy does not reproduce);
* ``vq_forward``, ``vq_gradients``: ``ste_utils.vector_quantize`` and the gradients of its four
  outputs, in the inputs' dtype as TensorFlow's kernels compute them (the losses' means in
  the order of its ``reduce_mean``, :mod:`ste_course.references.eigen`);
* ``reinforce``: the per-sample estimates (f(b) - c)(b - p) / (p (1 - p)) in float64, rounded
  once to p's dtype (what the REINFORCE specs' comparisons read: they judge the student's
  estimates as an estimator, not against these).
"""

from __future__ import annotations

import numpy as np

from ste_course.references.eigen import eigen_mean


# ----------------------------------------------------------------------------- Gumbel-softmax
def one_hot_argmax(z: np.ndarray) -> np.ndarray:
    """One-hot of the largest entry along the last axis, ties to the lowest index (as
    ``ste_utils.one_hot_argmax``), in z's dtype."""
    hot = np.argmax(z, axis=-1)[..., None] == np.arange(z.shape[-1])
    return hot.astype(z.dtype)


def gumbel_value(case) -> dict:
    """The straight-through Gumbel-softmax sample: one_hot(argmax(logits + noise))."""
    logits = np.asarray(case["logits"])
    return {"value": one_hot_argmax(logits + np.asarray(case["noise"], logits.dtype))}


# ----------------------------------------------------------------------------- vector quantization
def _nearest(case):
    """(z_e, codebook, the index of each vector's nearest code): squared differences summed
    along the code dimension in the inputs' dtype, ties to the lowest index."""
    z = np.asarray(case["z_e"])
    codebook = np.asarray(case["codebook"], z.dtype)
    distances = np.square(z[..., None, :] - codebook).sum(-1)
    return z, codebook, np.argmin(distances, axis=-1)


def vq_forward(case) -> dict:
    """``vector_quantize``: z_q = e_k (the nearest code, exactly), k (int64 here, as the spec
    reads it), codebook loss = commitment loss = mean((z_e - e_k)^2) in value (TensorFlow's
    order of the sum, :func:`ste_course.references.eigen.eigen_mean`)."""
    z, codebook, k = _nearest(case)
    chosen = codebook[k]
    loss = np.asarray(eigen_mean(np.square(z - chosen)))
    return {"z_q": chosen, "indices": k.astype(np.int64), "codebook_loss": loss, "commitment_loss": loss.copy()}


def vq_gradients(case) -> dict:
    """The gradients of ``vector_quantize``'s outputs, as TensorFlow's autodiff computes them in
    the inputs' dtype: z_q passes the upstream gradient to z_e and nothing to the codebook; each
    loss's gradient is (1/n) * (2 (z_e - e_k)) (n elements) to its own side only, the codebook's
    summed per code in the order of the vectors (``tf.gather``'s gradient, made dense)."""
    z, codebook, k = _nearest(case)
    one = z.dtype.type(1)
    pull = (one / z.dtype.type(z.size)) * ((z - codebook[k]) * z.dtype.type(2))
    codes = np.zeros_like(codebook)
    np.add.at(codes, k.ravel(), -pull.reshape(-1, z.shape[-1]))
    return {"z_e_from_z_q": np.asarray(case["upstream"], z.dtype), "codebook_from_z_q": np.zeros_like(codebook),
            "codebook_from_codebook_loss": codes, "z_e_from_codebook_loss": np.zeros_like(z),
            "z_e_from_commitment_loss": pull, "codebook_from_commitment_loss": np.zeros_like(codebook)}


# ----------------------------------------------------------------------------- REINFORCE
def reinforce_formula(f: np.ndarray, b: np.ndarray, p: np.ndarray, c) -> np.ndarray:
    """The score-function estimate (f(b) - c)(b - p) / (p (1 - p)) per sample (rows) and unit."""
    return (f[:, None] - c) * (b - p) / (p * (1 - p))


def reinforce(case) -> dict:
    """:func:`reinforce_formula` on the case's samples, in float64 and rounded once to p's dtype."""
    p = np.asarray(case["p"]).astype(np.float64)
    f, b = np.asarray(case["f_values"], np.float64), np.asarray(case["samples"], np.float64)
    c = np.asarray(case["baseline"], np.float64)
    return {"estimates": reinforce_formula(f, b, p, c).astype(np.asarray(case["p"]).dtype)}
