"""The model as a torch nn.Module; the Keras twin is digitnet.keras_net."""

from __future__ import annotations

import torch
from torch import nn

from digitnet.spec import ModelSpec


class DigitConvNet(nn.Module):
    """conv -> relu -> conv -> relu -> 2x2 max-pool -> flatten -> dense.

    Takes [N, side, side] float32 images and returns [N, classes] logits; the channel
    axis is added inside so that every stack accepts the same request tensor.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        first, second = spec.channels
        self.conv1 = nn.Conv2d(1, first, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(first, second, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(spec.head_features, spec.num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.unsqueeze(1)
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = self.pool(x)
        return self.head(torch.flatten(x, 1))
