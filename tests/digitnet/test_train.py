"""Training on digits reaches the promised accuracy, deterministically."""

from __future__ import annotations

import json

import torch

from digitnet.train import TrainConfig, accuracy, train_torch
from harness.artifacts import MIN_TEST_ACCURACY


def test_artifacts_report_held_out_accuracy(artifacts):
    metrics = json.loads(artifacts.metrics.read_text())
    assert metrics["test_size"] == 450
    assert metrics["test_accuracy_torch"] >= MIN_TEST_ACCURACY
    assert metrics["test_accuracy_keras"] == metrics["test_accuracy_torch"]


def test_same_seed_gives_same_weights(spec, split):
    config = TrainConfig(epochs=2)
    first = train_torch(spec, split, config).state_dict()
    second = train_torch(spec, split, config).state_dict()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_accuracy_counts_correct_predictions(spec, split):
    model = train_torch(spec, split, TrainConfig(epochs=1))
    labels = split.test_labels.copy()
    base = accuracy(model, split.test_images, labels)
    with torch.no_grad():
        predicted = model(torch.from_numpy(split.test_images)).argmax(1).numpy()
    labels[predicted == labels] = (labels[predicted == labels] + 1) % 10
    assert accuracy(model, split.test_images, labels) == 0.0
    assert base > 0.0
