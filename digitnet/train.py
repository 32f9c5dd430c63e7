"""Deterministic training of the torch model on the digits train split (seconds on CPU)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from digitnet.data import DigitsSplit
from digitnet.spec import ModelSpec
from digitnet.torch_net import DigitConvNet


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 60
    batch_size: int = 64
    learning_rate: float = 3e-3
    seed: int = 0
    # Keeps logits small (|logit| ~10 instead of ~50): float32 results of two frameworks
    # then agree to ~1e-6 absolute, well inside the 1e-5 parity bound.
    label_smoothing: float = 0.1


def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of `model` on numpy images [N, side, side]."""
    model.eval()
    with torch.no_grad():
        predicted = model(torch.from_numpy(images)).argmax(dim=1).numpy()
    return float((predicted == labels).mean())


def train_torch(spec: ModelSpec, split: DigitsSplit, config: TrainConfig) -> DigitConvNet:
    """Trains a fresh DigitConvNet with Adam; the same seed gives the same weights."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = DigitConvNet(spec)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    images = torch.from_numpy(split.train_images)
    labels = torch.from_numpy(split.train_labels)
    model.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), config.batch_size):
            batch = order[start : start + config.batch_size]
            optimizer.zero_grad()
            loss_fn(model(images[batch]), labels[batch]).backward()
            optimizer.step()
    model.eval()
    return model
