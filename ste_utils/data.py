"""Offline data: scikit-learn's bundled 8x8 digits, split and scaled with a fixed seed."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Split(NamedTuple):
    """Train/test arrays: images flattened to 64 float32 values in [0, 1], int labels 0-9."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits(test_fraction: float = 0.25, seed: int = 0) -> Split:
    """Load the 1,797 8x8 digit images shipped with scikit-learn (no download).

    Pixels (0-16) are scaled to [0, 1]; the split is stratified and fixed by ``seed``.

    Args:
        test_fraction: share of the images held out for testing, in (0, 1).
        seed: seed of the shuffle.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1). Received: test_fraction={test_fraction!r}")
    from sklearn.datasets import load_digits as _sk_load_digits
    from sklearn.model_selection import train_test_split

    digits = _sk_load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return Split(x_train, y_train, x_test, y_test)


def training_digits(validation_fraction: float = 0.2, seed: int = 0) -> Split:
    """The training split of :func:`load_digits` only, itself split into training and validation.

    For code whose model is graded on held-out digits: the test split of :func:`load_digits`
    (images and labels) is not in it. ``x_train``/``y_train`` hold ``1 - validation_fraction``
    of the 1,347 training images and ``x_test``/``y_test`` the rest, a *validation* part (so
    :func:`ste_utils.training.train` reports its ``val_accuracy`` on it). Stratified, fixed by
    ``seed``.

    Args:
        validation_fraction: share of the training split held out for validation, in (0, 1).
        seed: seed of the shuffle (the training split itself is always ``load_digits()``'s).
    """
    if not 0 < validation_fraction < 1:
        raise ValueError("validation_fraction must be in (0, 1). "
                         f"Received: validation_fraction={validation_fraction!r}")
    from sklearn.model_selection import train_test_split

    full = load_digits()
    x_train, x_val, y_train, y_val = train_test_split(
        full.x_train, full.y_train, test_size=validation_fraction, random_state=seed, stratify=full.y_train)
    return Split(x_train, y_train, x_val, y_val)


__all__ = ["Split", "load_digits", "training_digits"]
