"""scikit-learn's digits as model inputs: scaled, split, and sized for a ModelSpec."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from digitnet.spec import DIGITS_MAX_PIXEL, DIGITS_SIDE, ModelSpec

TEST_FRACTION = 0.25
SPLIT_SEED = 0


@dataclass(frozen=True)
class DigitsSplit:
    """Images are float32 [N, side, side] in [0, 1]; labels int64 [N]."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def upsample(images: np.ndarray, side: int) -> np.ndarray:
    """Nearest-neighbour upsampling of [N, 8, 8] images to [N, side, side]."""
    factor = side // DIGITS_SIDE
    if factor == 1:
        return images
    return np.kron(images, np.ones((1, factor, factor), dtype=images.dtype))


def load_split(spec: ModelSpec) -> DigitsSplit:
    """The fixed, stratified train/test split every trainer and parity check uses."""
    bunch = load_digits()
    images = (bunch.images / DIGITS_MAX_PIXEL).astype(np.float32)
    labels = bunch.target.astype(np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED
    )
    return DigitsSplit(
        train_images=upsample(train_x, spec.side),
        train_labels=train_y,
        test_images=upsample(test_x, spec.side),
        test_labels=test_y,
    )
