"""Specs for assignment 08 (the STE for discrete choices: Gumbel-softmax, vector quantization and
the score-function estimator with a baseline).

``gumbel_st/value``, ``gumbel_st/gradient``
    ``gumbel_softmax_st(logits, noise, temperature)`` with the Gumbel noise passed in (so the
    sample is deterministic): forward exactly ``one_hot(argmax(logits + noise))`` along the last
    axis (ties to the lowest index, as ``tf.argmax``), backward the gradient of
    ``softmax((logits + noise) / temperature)`` (Jang et al. 2017; Maddison et al. 2017).
``vq/forward``, ``vq/gradients``
    ``vector_quantize(z_e, codebook) -> (z_q, indices, codebook_loss, commitment_loss)`` as
    ``ste_utils.vector_quantize`` (van den Oord et al. 2017): the nearest code per vector (ties
    to the lowest index), z_q straight through to z_e and no gradient to the codebook, the
    codebook loss mean((sg(z_e) - e)^2) moving the codes only and the commitment loss
    mean((z_e - sg(e))^2) moving z_e only.
``reinforce/bias``, ``reinforce/variance``
    ``reinforce_gradient(f_values, samples, p, baseline) -> [K, n]`` per-sample score-function
    estimates (f(b) - c)(b - p) / (p (1 - p)) of d E[f] / dp, judged as an estimator on samples
    the grader draws per student (f(b) = ||W b - t||^2 with W, t kept from the student's code):
    per unit, the average within five standard errors of the exact gradient and the sample
    variance within 15 % of the exact variance with the given baseline (E[f], or Bengio et al.'s
    optimal baseline per unit), both computed by enumerating the 2^n outcomes.

Temperatures are powers of two and the cases keep clear of near-ties (a gap of at least 1e-3
between the best and the next candidate) except for exact ties built from small dyadic numbers,
which every correct formula computes exactly: the choice never depends on rounding.

Which side runs what: as in :mod:`ste_course.specs.elementwise`; the references are NumPy
(:mod:`ste_course.references.discrete`) except ``gumbel_st/gradient``'s, TensorFlow's softmax gradient.
"""

from __future__ import annotations

import numpy as np

from ste_course.specs.base import NumpyReference, Spec, register
from ste_course.specs.common import compare_with_hint, distinct, scale_hint, to_array

DTYPES = ("float32", "float64")
TEMPERATURES = (0.25, 0.5, 1.0, 2.0)
GAP = 1e-3


# ----------------------------------------------------------------------------- Gumbel-softmax cases
def _separate(z: np.ndarray) -> np.ndarray:
    """Noise offsets that move each row's runner-up at least ``GAP`` below its best entry."""
    fix = np.zeros_like(z)
    for r, row in enumerate(z.reshape(-1, z.shape[-1])):
        order = np.argsort(-row, kind="stable")
        best = row[order[0]]
        for j in order[1:]:
            if 0 < best - row[j] < GAP * max(1.0, abs(best)):
                fix.reshape(-1, z.shape[-1])[r, j] = -10 * GAP * max(1.0, abs(best))
    return fix


def _gumbel_case(logits, noise, tau, upstream, dtype) -> dict:
    return {"logits": np.asarray(logits, dtype), "noise": np.asarray(noise, dtype),
            "temperature": float(tau), "upstream": np.asarray(upstream, dtype)}


def _gumbel_cases(rng, hidden):
    if not hidden:
        # rows: the noise changes the choice; an exact three-way tie (lowest index); a tie between
        # the last two; the largest logit last; a plain row
        logits = np.array([[2.0, 1.0, 0.0, -1.0], [0.5, 0.25, 0.5, 0.0], [0.0, 0.0, 1.0, 1.0],
                           [-1.0, 0.0, 0.5, 3.0], [1.0, -2.0, 0.0, 0.25]])
        noise = np.array([[0.0, 1.5, 0.25, 0.0], [0.0, 0.25, 0.0, -0.5], [0.0, 0.5, 0.25, 0.25],
                          [0.5, 0.75, -0.25, 0.125], [0.3, 1.1, -0.4, 0.9]])
        upstream = np.resize(np.array([1.0, -2.0, 0.5, 3.0, 0.0, 1.5]), logits.shape).reshape(logits.shape)
        return [_gumbel_case(logits, noise, 1.0, np.ones_like(logits), "float32"),
                _gumbel_case(logits, noise, 0.5, upstream, "float32")]
    out = []
    shapes = ((6, 5), (2, 3, 4), (8, 3))
    start = int(rng.integers(len(TEMPERATURES)))
    for i, (dtype, shape) in enumerate([(d, s) for d in DTYPES for s in shapes]):
        logits = rng.normal(0.0, 1.5, shape)
        noise = -np.log(-np.log(rng.uniform(1e-6, 1.0, shape)))
        if i == 0:  # exact ties from small dyadic numbers: every formula agrees on them
            logits = rng.integers(-4, 4, shape) / 4.0
            noise = rng.integers(-2, 3, shape) / 8.0
            flat_l, flat_n = logits.reshape(-1, shape[-1]), noise.reshape(-1, shape[-1])
            for r in range(0, flat_l.shape[0], 2):  # a tie for the best entry in every other row
                k, j = sorted(rng.choice(shape[-1], 2, replace=False))
                best = (flat_l[r] + flat_n[r]).max() + 0.5
                flat_l[r, k], flat_n[r, k], flat_l[r, j], flat_n[r, j] = best - 0.25, 0.25, best, 0.0
        else:
            noise = noise + _separate(logits + noise)
        logits, noise = logits.astype(dtype), noise.astype(dtype)
        if i > 0:  # the sum in the input's dtype must keep the gap too
            noise = noise + _separate((logits + noise).astype(dtype)).astype(dtype)
        upstream = rng.normal(0.0, 1.0, shape) if i % 2 else np.ones(shape)
        out.append(_gumbel_case(logits, noise, TEMPERATURES[(start + i) % len(TEMPERATURES)], upstream, dtype))
    return out


def _gumbel_run(fn, case, output):
    import tensorflow as tf

    logits, noise = tf.constant(case["logits"]), tf.constant(case["noise"])
    with tf.GradientTape() as tape:
        tape.watch(logits)
        y = fn(logits, noise, case["temperature"])
    if output == "value":
        return {"value": to_array(y, "gumbel_softmax_st(...)")}
    grad = tape.gradient(y, logits, output_gradients=tf.constant(case["upstream"]))
    return {"gradient": tf.zeros_like(logits) if grad is None else grad}


def _gumbel_gradient_reference(case):
    """TensorFlow's gradient of softmax((logits + noise) / tau): still TensorFlow, since Eigen's
    vectorised exp and summation order move it by a few units in the last place from any NumPy
    formula (a float64 one agrees to 4e-5 relative on small entries)."""
    import tensorflow as tf

    logits, noise = tf.constant(case["logits"]), tf.constant(case["noise"])
    tau = tf.constant(case["temperature"], logits.dtype)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        y = tf.nn.softmax((logits + noise) / tau)
    return {"gradient": tape.gradient(y, logits, output_gradients=tf.constant(case["upstream"]))}


def _gumbel_describe(case) -> str:
    logits = np.asarray(case["logits"])
    return (f"logits of dtype {logits.dtype.name} and shape {logits.shape} "
            f"(temperature {case['temperature']:g})")


def _row(case, index):
    logits = np.asarray(case["logits"])
    k = logits.shape[-1]
    return index // k, index % k, logits.reshape(-1, k), np.asarray(case["noise"]).reshape(-1, k)


def _fmt_row(values) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def _compare_gumbel_value(case, expected, got):
    """Exactly one-hot, at argmax(logits + noise): no tolerance (the sample selects a category)."""
    where = _gumbel_describe(case)
    exp = np.asarray(expected["value"])
    values, dtype = got["value"]
    if dtype != exp.dtype.name:
        return [f"On {where} the sample should have dtype {exp.dtype.name} (the logits'); yours has {dtype}."]
    if values.shape != exp.shape:
        return [f"On {where} the sample should have the logits' shape {exp.shape}; yours has {values.shape}."]
    k = exp.shape[-1]
    messages = []
    z = (np.asarray(case["logits"]) + np.asarray(case["noise"])).reshape(-1, k)
    logits = np.asarray(case["logits"]).reshape(-1, k)
    for r, (want, have) in enumerate(zip(exp.reshape(-1, k), values.reshape(-1, k))):
        if np.array_equal(want, have):
            continue
        if not (np.isin(have, (0.0, 1.0)).all() and have.sum() == 1):
            messages.append(f"On {where} row {r} of your sample is not exactly one-hot: {_fmt_row(have)} "
                            "(exactly one 1 and zeros, whatever the rounding; a sum like y_hard - "
                            "stop_gradient(y) + y need not be exact: write the gradient with "
                            "tf.custom_gradient, or make sure the value is the one-hot itself).")
        else:
            best, mine = int(np.argmax(want)), int(np.argmax(have))
            tie = np.flatnonzero(z[r] == z[r].max())
            why = (f" (a tie between categories {', '.join(map(str, tie))}: the lowest index, as tf.argmax)"
                   if len(tie) > 1 else "")
            ignored = (" It looks like the noise was left out: the sample is argmax(logits + noise)."
                       if mine == int(np.argmax(logits[r])) and mine != best else "")
            messages.append(f"On {where} row {r} should pick category {best}, the argmax of logits + noise = "
                            f"{_fmt_row(z[r])}{why}; yours picks {mine}.{ignored}")
        if len(messages) >= 2:
            break
    return messages


def _gumbel_explain(case, output, index, expected, got):
    r, k, _, _ = _row(case, index)
    e, g = distinct(expected, got)
    return (f"The gradient for logit {k} of row {r} ({_gumbel_describe(case)}) should be {e}, the "
            f"softmax's: y_k (u_k - sum_j u_j y_j) / tau with y = softmax((logits + noise) / tau), "
            f"u the upstream gradient; yours is {g}.")


def _softmax_gradient(z: np.ndarray, tau: float, upstream: np.ndarray) -> np.ndarray:
    """J^T u for y = softmax(z / tau) along the last axis, J = (diag(y) - y y^T) / tau (NumPy, float64)."""
    e = np.exp((z - z.max(-1, keepdims=True)) / tau)
    y = e / e.sum(-1, keepdims=True)
    return y * (upstream - (upstream * y).sum(-1, keepdims=True)) / tau


def _gumbel_hint(case, output, expected, got):
    if expected.shape != got.shape:
        return None
    tau = case["temperature"]
    logits, noise = (np.asarray(case[k], np.float64) for k in ("logits", "noise"))
    upstream = np.asarray(case["upstream"], np.float64)
    close = lambda other: np.allclose(got, other, rtol=1e-4, atol=1e-6) and not np.allclose(expected, other)  # noqa: E731
    if close(upstream):
        return ("Hint: your gradient is the upstream gradient itself (the identity STE); the "
                "straight-through Gumbel-softmax passes the gradient of the soft sample "
                "softmax((logits + noise) / tau) instead.")
    if tau != 1 and close(expected * tau):
        return (f"Hint: your gradient is tau = {tau:g} times the right one: the 1/tau of the "
                "softmax's Jacobian is missing.")
    if tau != 1 and close(_softmax_gradient(logits + noise, 1.0, upstream)):
        return ("Hint: your gradient is the softmax's at temperature 1: take the soft sample at the "
                "temperature, softmax((logits + noise) / tau).")
    if close(_softmax_gradient(logits, tau, upstream)):
        return "Hint: your gradient leaves the noise out: the soft sample is softmax((logits + noise) / tau)."
    return scale_hint(expected, got, "gradient")


register(Spec(name="gumbel_st/value", summary="samples of your gumbel_softmax_st (exactly one-hot, argmax of logits + noise)",
              cases=_gumbel_cases, run=lambda fn, case: _gumbel_run(fn, case, "value"),
              reference=NumpyReference("discrete", "gumbel_value"), describe=_gumbel_describe, compare=_compare_gumbel_value))
register(Spec(name="gumbel_st/gradient",
              summary="gradients of your gumbel_softmax_st (the softmax's at temperature tau)",
              cases=_gumbel_cases, run=lambda fn, case: _gumbel_run(fn, case, "gradient"),
              reference=_gumbel_gradient_reference, describe=_gumbel_describe, explain=_gumbel_explain,
              compare=compare_with_hint("gumbel_st/gradient", _gumbel_hint)))


# ----------------------------------------------------------------------------- VQ cases
def _distances(z, codebook) -> np.ndarray:
    return ((z[..., None, :].astype(np.float64) - codebook.astype(np.float64)) ** 2).sum(-1)


def _away_from_ties(z: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Move each vector whose two nearest codes are almost equally far half-way to the nearest."""
    z = z.copy()
    for _ in range(20):
        d = np.sort(_distances(z, codebook), axis=-1)
        close = (d[..., 1] - d[..., 0]) < GAP * np.maximum(1.0, d[..., 1])
        if not close.any():
            break
        nearest = codebook[np.argmin(_distances(z, codebook), axis=-1)]
        z = np.where(close[..., None], (z + nearest) / 2, z)
    return z


def _vq_case(z_e, codebook, upstream, dtype) -> dict:
    return {"z_e": np.asarray(z_e, dtype), "codebook": np.asarray(codebook, dtype),
            "upstream": np.asarray(upstream, dtype)}


def _vq_cases(rng, hidden):
    if not hidden:
        # 4 codes in 2-D; vector 2 is exactly half-way between codes 0 and 1 (the lowest wins);
        # code 3 is nobody's nearest (it must get no gradient from the codebook loss)
        codebook = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [4.0, 4.0]])
        z_e = np.array([[0.25, 0.125], [0.75, -0.25], [0.5, 0.0], [0.125, 1.5], [-0.5, 0.5]])
        upstream = np.resize(np.array([1.0, -2.0, 0.5]), z_e.shape).reshape(z_e.shape)
        return [_vq_case(z_e, codebook, upstream, "float32")]
    out = []
    shapes = (((6, 3), 4), ((2, 4, 2), 5), ((7, 4), 3))
    for i, (dtype, (shape, k)) in enumerate([(d, s) for d in DTYPES for s in shapes]):
        if i == 0:  # small dyadic numbers with exact ties, every formula computes them exactly
            codebook = rng.integers(-8, 8, (k, shape[-1])) / 4.0
            z_e = rng.integers(-16, 16, shape) / 8.0
            flat = z_e.reshape(-1, shape[-1])
            for r in range(0, flat.shape[0], 2):
                a, b = rng.choice(k, 2, replace=False)
                if not np.array_equal(codebook[a], codebook[b]):
                    flat[r] = (codebook[a] + codebook[b]) / 2
        else:
            codebook = rng.normal(0.0, 1.0, (k, shape[-1]))
            z_e = _away_from_ties(rng.normal(0.0, 1.0, shape), codebook)
        z_e, codebook = np.asarray(z_e, dtype), np.asarray(codebook, dtype)
        if i > 0:
            z_e = _away_from_ties(z_e.astype(np.float64), codebook).astype(dtype)
        upstream = rng.normal(0.0, 1.0, shape) if i % 2 else np.ones(shape)
        out.append(_vq_case(z_e, codebook, upstream, dtype))
    return out


VQ_OUTPUTS = ("z_q", "indices", "codebook_loss", "commitment_loss")


def _vq_result(result) -> dict:
    if isinstance(result, dict):
        values = [result.get(k) for k in VQ_OUTPUTS]
    elif isinstance(result, (tuple, list)) and len(result) == 4:
        values = list(result)
    else:
        raise TypeError("vector_quantize must return (z_q, indices, codebook_loss, commitment_loss); "
                        f"it returned {type(result).__name__}")
    return dict(zip(VQ_OUTPUTS, values))


def _vq_forward(fn, case):
    import tensorflow as tf

    out = _vq_result(fn(tf.constant(case["z_e"]), tf.constant(case["codebook"])))
    arrays = {k: to_array(v, f"vector_quantize(...)'s {k}") for k, v in out.items()}
    arrays["indices"] = arrays["indices"].astype(np.int64) if arrays["indices"].dtype.kind in "iu" else arrays["indices"]
    return arrays


GRADIENTS = {  # output name -> (what is differentiated, with respect to what)
    "z_e_from_z_q": ("z_q", "z_e"), "codebook_from_z_q": ("z_q", "codebook"),
    "codebook_from_codebook_loss": ("codebook_loss", "codebook"), "z_e_from_codebook_loss": ("codebook_loss", "z_e"),
    "z_e_from_commitment_loss": ("commitment_loss", "z_e"),
    "codebook_from_commitment_loss": ("commitment_loss", "codebook"),
}


def _vq_gradients(fn, case):
    import tensorflow as tf

    inputs = {"z_e": tf.constant(case["z_e"]), "codebook": tf.constant(case["codebook"])}
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(list(inputs.values()))
        out = _vq_result(fn(inputs["z_e"], inputs["codebook"]))
    upstream = {"z_q": tf.constant(case["upstream"]), "codebook_loss": None, "commitment_loss": None}
    result = {}
    for name, (what, wrt) in GRADIENTS.items():
        grad = tape.gradient(out[what], inputs[wrt], output_gradients=upstream[what])
        # tf.gather's gradient is IndexedSlices: made dense here
        result[name] = tf.zeros_like(inputs[wrt]) if grad is None else tf.convert_to_tensor(grad)
    return result


def _vq_describe(case) -> str:
    z = np.asarray(case["z_e"])
    return f"z_e of dtype {z.dtype.name} and shape {z.shape} with a codebook of {len(case['codebook'])} codes"


def _vq_forward_explain(case, output, index, expected, got):
    e, g = distinct(expected, got)
    where = _vq_describe(case)
    z = np.asarray(case["z_e"])
    codebook = np.asarray(case["codebook"])
    if output in ("z_q", "indices"):
        v = index if output == "indices" else index // z.shape[-1]
        vec = z.reshape(-1, z.shape[-1])[v]
        d = _distances(vec, codebook)
        best = int(np.argmin(d))
        tie = np.flatnonzero(d == d.min())
        why = (f" (codes {', '.join(map(str, tie))} are equally far: the lowest index wins, as tf.argmin)"
               if len(tie) > 1 else "")
        if output == "indices":
            return (f"On {where} vector {v} {_fmt_row(vec)} should get code {best}, at squared distance "
                    f"{d[best]:.6g}{why}; yours is {g}.")
        return (f"On {where} z_q for vector {v} should be code {best} = {_fmt_row(codebook[best])}{why}: "
                f"entry {index % z.shape[-1]} should be {e}; yours is {g}.")
    loss = "mean((sg(z_e) - e)^2)" if output == "codebook_loss" else "mean((z_e - sg(e))^2)"
    return (f"On {where} the {output.replace('_', ' ')} should be {e}, {loss} over every element "
            f"(e the chosen code of each vector); yours is {g}.")


def _vq_forward_hint(case, output, expected, got):
    if output in ("codebook_loss", "commitment_loss") and expected.shape == got.shape == () and expected != 0:
        d = np.asarray(case["z_e"]).shape[-1]
        ratio = float(got) / float(expected)
        if np.isclose(ratio, d, rtol=1e-5) and d != 1:
            return (f"Hint: your loss is D = {d} times the right one: take the mean over every element "
                    "(the squared norm over the code dimension divided by D), as the assignment says.")
    return None


_GRADIENT_WHY = {
    "z_e_from_z_q": ("z_q passes its gradient straight through to z_e (z_q = z_e + sg(e - z_e)): this is the "
                     "upstream gradient of z_q"),
    "codebook_from_z_q": ("the codebook gets no gradient through z_q: in z_e + sg(e - z_e) the codes appear only "
                          "inside stop_gradient (chapter 5), so they learn from the codebook loss alone"),
    "codebook_from_codebook_loss": ("the codebook loss mean((sg(z_e) - e)^2) pulls each chosen code towards its "
                                    "vectors: 2 (e - z_e) / n summed over the vectors that chose it (n elements), "
                                    "0 for a code that nobody chose"),
    "z_e_from_codebook_loss": "the codebook loss has z_e inside stop_gradient: it moves the codes only",
    "z_e_from_commitment_loss": ("the commitment loss mean((z_e - sg(e))^2) pulls z_e towards its code: "
                                 "2 (z_e - e) / n (n elements)"),
    "codebook_from_commitment_loss": "the commitment loss has the code inside stop_gradient: it moves z_e only",
}


def _vq_gradient_explain(case, output, index, expected, got):
    e, g = distinct(expected, got)
    wrt = GRADIENTS[output][1]
    shape = np.asarray(case[wrt]).shape
    pos = tuple(int(i) for i in np.unravel_index(index, shape))
    what = GRADIENTS[output][0]
    what = what if what == "z_q" else what.replace("_", " ")
    return (f"On {_vq_describe(case)} the gradient of the {what} with respect to {wrt} at {pos} should be {e} "
            f"because {_GRADIENT_WHY[output]}; yours is {g}.")


register(Spec(name="vq/forward",
              summary="z_q, indices and the two losses of your vector_quantize (nearest code, ties to the lowest index)",
              cases=_vq_cases, run=_vq_forward, reference=NumpyReference("discrete", "vq_forward"), describe=_vq_describe,
              explain=_vq_forward_explain, compare=compare_with_hint("vq/forward", _vq_forward_hint)))
register(Spec(name="vq/gradients",
              summary="gradients of your vector_quantize: z_q straight through to z_e, each loss to its own side",
              cases=_vq_cases, run=_vq_gradients, reference=NumpyReference("discrete", "vq_gradients"), describe=_vq_describe,
              explain=_vq_gradient_explain))


# ----------------------------------------------------------------------------- REINFORCE with a baseline
# A score-function estimator is judged as an estimator: on samples the grader draws (a problem
# per student), the average of the student's per-sample estimates must lie within
# REINFORCE_SIGMAS standard errors of the closed-form gradient (bias), and their sample variance
# within REINFORCE_VARIANCE_TOL of the exact variance for the given baseline (both per unit,
# computed exactly by enumerating the 2^n outcomes). A case is kept only if the exact formula
# passes both checks with room to spare and the usual mistakes miss them (see _usable).
REINFORCE_SAMPLES = 4000
REINFORCE_SIGMAS = 5.0
REINFORCE_VARIANCE_TOL = 0.15


def _outcomes(n: int) -> np.ndarray:
    return np.array([[(k >> i) & 1 for i in range(n)] for k in range(2 ** n)], np.float64)


def _reinforce_loss(case, b: np.ndarray) -> np.ndarray:
    """f(b) = ||W b - t||^2 for each row of b (float64)."""
    w, t = np.asarray(case["W"], np.float64), np.asarray(case["t"], np.float64)
    return ((b @ w.T - t) ** 2).sum(axis=-1)


def _reinforce_formula(f: np.ndarray, b: np.ndarray, p: np.ndarray, c) -> np.ndarray:
    from ste_course.references.discrete import reinforce_formula  # the grader's side (cases, judging)

    return reinforce_formula(f, b, p, c)


def _reinforce_exact(case, baseline=None) -> tuple:
    """(gradient, variance) per unit of the estimator with ``baseline`` (the case's by default),
    exactly: every outcome of the n units, weighted by its probability (float64)."""
    p = np.asarray(case["p"], np.float64)
    c = np.asarray(case["baseline"] if baseline is None else baseline, np.float64)
    s = _outcomes(len(p))
    prob = np.prod(np.where(s == 1, p, 1 - p), axis=1)
    estimates = _reinforce_formula(_reinforce_loss(case, s), s, p, c)
    mean = prob @ estimates
    return mean, prob @ (estimates - mean) ** 2


def _reinforce_checks(case, estimates: np.ndarray) -> tuple:
    """(mean, its tolerance, sample variance, exact gradient, exact variance) per unit."""
    gradient, variance = _reinforce_exact(case)
    n = estimates.shape[0]
    return (estimates.mean(axis=0), REINFORCE_SIGMAS * np.sqrt(variance / n), estimates.var(axis=0),
            gradient, variance)


def _usable(case) -> bool:
    """The exact formula passes with room to spare (4 standard errors, 2/3 of the variance
    tolerance); a missing 1/(p(1-p)), a flipped sign, the baseline subtracted after the
    product and a baseline left out each fail."""
    p, b = np.asarray(case["p"], np.float64), np.asarray(case["samples"], np.float64)
    f, c = np.asarray(case["f_values"], np.float64), np.asarray(case["baseline"], np.float64)
    right = _reinforce_formula(f, b, p, c)
    mean, tol, var, gradient, exact = _reinforce_checks(case, right)
    if np.any(np.abs(mean - gradient) > 0.8 * tol) or np.any(np.abs(var / exact - 1) > REINFORCE_VARIANCE_TOL * 2 / 3):
        return False
    wrong_means = [mean * p * (1 - p), -mean, (f[:, None] * (b - p) / (p * (1 - p)) - c).mean(axis=0)]
    if not all(np.any(np.abs(m - gradient) > 3 * tol) for m in wrong_means):
        return False
    _, without = _reinforce_exact(case, 0.0)
    return bool(np.any(np.abs(without / exact - 1) > 3 * REINFORCE_VARIANCE_TOL))


def _reinforce_case(rng, n: int, dtype: str, per_unit: bool) -> dict:
    for _ in range(200):
        case = {"W": rng.normal(0.0, 1.0, (3, n)), "t": rng.normal(0.0, 1.0, 3),
                "p": np.round(rng.uniform(0.2, 0.8, n), 2)}
        s = _outcomes(n)
        prob = np.prod(np.where(s == 1, case["p"], 1 - case["p"]), axis=1)
        f_all = _reinforce_loss(case, s)
        if per_unit:  # Bengio et al.'s optimal baseline per unit, rounded
            weights = prob[:, None] * (s - case["p"]) ** 2
            case["baseline"] = np.round((weights * f_all[:, None]).sum(0) / weights.sum(0), 2)
        else:          # E[f], rounded
            case["baseline"] = float(np.round(prob @ f_all, 2))
        b = (rng.uniform(size=(REINFORCE_SAMPLES, n)) < case["p"]).astype(np.float64)
        case["samples"] = b
        case["f_values"] = _reinforce_loss(case, b)
        if _usable(case):
            return {"f_values": case["f_values"].astype(dtype), "samples": b.astype(dtype),
                    "p": case["p"].astype(dtype),
                    "baseline": case["baseline"].astype(dtype) if per_unit else case["baseline"],
                    "W": case["W"], "t": case["t"]}
    raise RuntimeError("could not draw a usable REINFORCE case")  # pragma: no cover


def _reinforce_cases(rng, hidden):
    if not hidden:
        return [_reinforce_case(rng, 4, "float32", per_unit=False)]
    return [_reinforce_case(rng, 3, "float32", per_unit=False), _reinforce_case(rng, 5, "float64", per_unit=True),
            _reinforce_case(rng, 4, "float32", per_unit=True)]


def _reinforce_run(fn, case):
    import tensorflow as tf

    baseline = case["baseline"]
    baseline = tf.constant(baseline) if isinstance(baseline, np.ndarray) else baseline
    out = fn(tf.constant(case["f_values"]), tf.constant(case["samples"]), tf.constant(case["p"]), baseline)
    return {"estimates": to_array(out, "reinforce_gradient(...)")}


def _reinforce_describe(case) -> str:
    p = np.asarray(case["p"])
    c = np.asarray(case["baseline"])
    baseline = f"{float(c):g}" if c.ndim == 0 else _fmt_row(c)
    return (f"{len(case['f_values'])} samples of {len(p)} units of dtype {p.dtype.name} "
            f"(p = {_fmt_row(p)}, baseline {baseline})")


def _reinforce_shape(case, got) -> tuple:
    values, _ = got["estimates"]
    want = np.asarray(case["samples"]).shape
    if tuple(values.shape) != want:
        return None, [f"On {_reinforce_describe(case)} your estimates should have shape {want} (one per "
                      f"sample and unit); yours have shape {tuple(values.shape)}."]
    if not np.all(np.isfinite(values)):
        return None, [f"On {_reinforce_describe(case)} some of your estimates are not finite."]
    return values.astype(np.float64), []


def _compare_reinforce_bias(case, expected, got):
    """Per unit: the average of the estimates within five standard errors of the true gradient."""
    values, messages = _reinforce_shape(case, got)
    if values is None:
        return messages
    mean, tol, _, gradient, _ = _reinforce_checks(case, values)
    bad = np.flatnonzero(np.abs(mean - gradient) > tol)
    if not len(bad):
        return []
    i = int(bad[0])
    p = np.asarray(case["p"], np.float64)
    c = np.asarray(case["baseline"], np.float64)
    hint = ""
    if np.allclose(mean, gradient * p * (1 - p), rtol=0.05, atol=tol.max() / 5):
        hint = " Hint: the score of Bernoulli(p) is d log P(b; p) / dp = (b - p) / (p (1 - p)); yours lacks the division."
    elif np.allclose(mean, -gradient, rtol=0.05, atol=tol.max() / 5):
        hint = " Hint: your average has the wrong sign: the score is (b - p) / (p (1 - p)), not (p - b) / ..."
    elif np.allclose(mean, gradient - c, rtol=0.05, atol=tol.max()):
        hint = (" Hint: your average is off by the baseline: subtract it from f(b) before multiplying by the "
                "score, (f(b) - c) (b - p) / (p (1 - p)).")
    return [f"On {_reinforce_describe(case)} the average of your estimates for unit {i} is {mean[i]:.6g}; "
            f"the true gradient d E[f] / dp_{i} is {gradient[i]:.6g} (computed exactly), and the average of an "
            f"unbiased estimator over these samples lies within {tol[i]:.3g} of it (five standard errors)."
            f"{f' ({len(bad)} of {len(mean)} units are off.)' if len(bad) > 1 else ''}{hint}"]


def _compare_reinforce_variance(case, expected, got):
    """Per unit: the sample variance within 15 % of the exact variance with the given baseline."""
    values, messages = _reinforce_shape(case, got)
    if values is None:
        return messages
    _, _, var, _, exact = _reinforce_checks(case, values)
    bad = np.flatnonzero(np.abs(var / exact - 1) > REINFORCE_VARIANCE_TOL)
    if not len(bad):
        return []
    i = int(bad[0])
    _, without = _reinforce_exact(case, 0.0)
    hint = ""
    if np.all(np.abs(var / without - 1) <= REINFORCE_VARIANCE_TOL):
        hint = (" Hint: that is the variance without a baseline: use the baseline you are given, "
                "(f(b) - c) (b - p) / (p (1 - p)).")
    return [f"On {_reinforce_describe(case)} your estimates for unit {i} have variance {var[i]:.6g}; the "
            f"score-function estimator with this baseline has variance {exact[i]:.6g} (computed exactly over all "
            f"{2 ** len(exact)} outcomes), and the variance of its {values.shape[0]} samples lies within "
            f"{REINFORCE_VARIANCE_TOL:.0%} of that.{hint}"]


register(Spec(name="reinforce/bias",
              summary="the average of your reinforce_gradient estimates against the exact gradient (bias)",
              cases=_reinforce_cases, run=_reinforce_run, reference=NumpyReference("discrete", "reinforce"),
              describe=_reinforce_describe, compare=_compare_reinforce_bias, hidden_inputs=("W", "t")))
register(Spec(name="reinforce/variance",
              summary="the variance of your reinforce_gradient estimates against the exact variance with the baseline",
              cases=_reinforce_cases, run=_reinforce_run, reference=NumpyReference("discrete", "reinforce"),
              describe=_reinforce_describe, compare=_compare_reinforce_variance, hidden_inputs=("W", "t")))
