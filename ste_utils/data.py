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


__all__ = ["Split", "load_digits"]
