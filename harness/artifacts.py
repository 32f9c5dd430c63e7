"""Trains the model once and writes every artifact the stacks serve.

The shared model formats (digitnet.artifacts) are written here; then each registered
stack builds what it needs from them (TorchServe packs its .mar), through its plugin.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from digitnet.artifacts import ArtifactPaths
from digitnet.spec import ModelSpec
from services.registry import all_stacks

if TYPE_CHECKING:
    from digitnet.train import TrainConfig

MIN_TEST_ACCURACY = 0.97


def missing_files(paths: ArtifactPaths) -> list[Path]:
    """Shared model files and every registered stack's own artifacts that do not exist."""
    wanted = paths.shared_files()
    for stack in all_stacks():
        wanted += stack.artifact_files(paths)
    return [path for path in wanted if not path.exists()]


def complete(paths: ArtifactPaths) -> bool:
    return not missing_files(paths)


def build_all(root: Path, spec: ModelSpec, config: TrainConfig | None = None,
              min_accuracy: float = MIN_TEST_ACCURACY) -> dict:  # fmt: skip
    """Trains on digits, ports the weights, and writes every artifact.

    Args:
        config: training settings (TrainConfig's defaults if None).
        min_accuracy: refuse to write artifacts below this test accuracy (the model-size
            sweep trains heavy variants briefly and only times them).

    Returns:
        The metrics written to metrics.json (test accuracy per framework, timings).
    """
    # Heavy imports stay out of module import so `--help` and path lookups are instant.
    import torch

    from digitnet.data import load_split
    from digitnet.keras_net import DigitConvNetKeras
    from digitnet.port import port_torch_to_keras
    from digitnet.savedmodel import export_savedmodel
    from digitnet.torchscript import export_torchscript
    from digitnet.train import TrainConfig, accuracy, train_torch

    paths = ArtifactPaths(root, spec)
    split = load_split(spec)
    config = config or TrainConfig()
    started = time.perf_counter()
    model = train_torch(spec, split, config)
    train_s = time.perf_counter() - started
    torch_acc = accuracy(model, split.test_images, split.test_labels)
    if torch_acc < min_accuracy:
        raise RuntimeError(f"test accuracy {torch_acc:.4f} is below {min_accuracy}")

    paths.state_dict.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), paths.state_dict)
    export_torchscript(model, paths.torchscript)
    with torch.inference_mode():
        reference = model(torch.from_numpy(split.test_images)).numpy()
    paths.reference_predictions.write_text(
        json.dumps(
            {
                "split": "test",
                "logits": reference.round(6).tolist(),
                "classes": reference.argmax(axis=1).tolist(),
                "labels": split.test_labels.tolist(),
            }
        )
        + "\n"
    )

    keras_model = DigitConvNetKeras(spec)
    port_torch_to_keras(model, keras_model)
    keras_pred = keras_model.predict_on_batch(split.test_images).argmax(axis=1)
    keras_acc = float((keras_pred == split.test_labels).mean())
    export_savedmodel(keras_model, paths.tf_serving_base)
    # Then what each stack makes of the shared files (TorchServe's .mar, TF Serving's
    # warm-up records), declared by its plugin.
    for stack in all_stacks():
        stack.build(paths)

    metrics = {
        "spec": asdict(spec),
        "train_config": asdict(config),
        "train_seconds": round(train_s, 2),
        "test_size": int(len(split.test_labels)),
        "test_accuracy_torch": torch_acc,
        "test_accuracy_keras": keras_acc,
    }
    paths.metrics.write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def ensure_artifacts(root: Path, spec: ModelSpec | None = None) -> ArtifactPaths:
    """The artifacts under `root`, built first if any is missing."""
    paths = ArtifactPaths(root, spec or ModelSpec.from_env())
    if not complete(paths):
        build_all(root, paths.spec)
    return paths
