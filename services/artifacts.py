"""Trains the model once and writes every artifact the three stacks serve.

Layout under the artifacts directory (git-ignored, rebuilt by `make artifacts`):
  metrics.json                       test accuracy, spec, training config
  torch/digitnet.pt                  torch state dict (the trained weights)
  torchscript/digitnet.torchscript.pt  served by TorchServe and Flask
  tf_serving/<name>/<version>/       SavedModel served by TF Serving
  torchserve/model-store/<name>.mar  TorchServe archive
  reference_predictions.json         TorchScript logits and classes on the test split, the
                                     answer key load tests check responses against
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from digitnet.spec import ModelSpec

DEFAULT_ARTIFACTS = Path(os.environ.get("DIGITNET_ARTIFACTS", "artifacts"))
MIN_TEST_ACCURACY = 0.97


@dataclass(frozen=True)
class ArtifactPaths:
    """Where each artifact lives; every stack and test reads paths from here."""

    root: Path
    spec: ModelSpec

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def state_dict(self) -> Path:
        return self.root / "torch" / f"{self.spec.name}.pt"

    @property
    def torchscript(self) -> Path:
        return self.root / "torchscript" / f"{self.spec.name}.torchscript.pt"

    @property
    def tf_serving_base(self) -> Path:
        """Parent of the model base path: TF Serving gets `tf_serving_base/<name>`."""
        return self.root / "tf_serving"

    @property
    def savedmodel(self) -> Path:
        return self.tf_serving_base / self.spec.name / str(self.spec.version)

    @property
    def reference_predictions(self) -> Path:
        return self.root / "reference_predictions.json"

    @property
    def model_store(self) -> Path:
        return self.root / "torchserve" / "model-store"

    @property
    def mar(self) -> Path:
        return self.model_store / f"{self.spec.name}.mar"

    def complete(self) -> bool:
        return all(
            p.exists()
            for p in (
                self.metrics,
                self.state_dict,
                self.torchscript,
                self.savedmodel,
                self.mar,
                self.reference_predictions,
            )
        )


def build_all(root: Path, spec: ModelSpec) -> dict:
    """Trains on digits, ports the weights, and writes every artifact.

    Returns:
        The metrics written to metrics.json (test accuracy per framework, timings).
    """
    # Heavy imports stay out of module import so `--help` and path lookups are instant.
    import torch

    from digitnet.data import load_split
    from digitnet.keras_net import DigitConvNetKeras
    from digitnet.port import port_torch_to_keras
    from digitnet.torchscript import export_torchscript
    from digitnet.train import TrainConfig, accuracy, train_torch
    from services.tf_serving.export import export_savedmodel
    from services.torchserve.build_mar import build_mar

    paths = ArtifactPaths(root, spec)
    split = load_split(spec)
    config = TrainConfig()
    started = time.perf_counter()
    model = train_torch(spec, split, config)
    train_s = time.perf_counter() - started
    torch_acc = accuracy(model, split.test_images, split.test_labels)
    if torch_acc < MIN_TEST_ACCURACY:
        raise RuntimeError(f"test accuracy {torch_acc:.4f} is below {MIN_TEST_ACCURACY}")

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
    build_mar(paths.torchscript, paths.model_store, spec)

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
    if not paths.complete():
        build_all(root, paths.spec)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_ARTIFACTS)
    parser.add_argument("--force", action="store_true", help="rebuild even if complete")
    args = parser.parse_args()
    spec = ModelSpec.from_env()
    paths = ArtifactPaths(args.out, spec)
    if paths.complete() and not args.force:
        print(f"artifacts: up to date in {args.out} (use --force to rebuild)")
        return
    metrics = build_all(args.out, spec)
    print(
        f"artifacts: trained {spec.name} in {metrics['train_seconds']} s; test accuracy "
        f"torch {metrics['test_accuracy_torch']:.4f}, keras {metrics['test_accuracy_keras']:.4f} "
        f"on {metrics['test_size']} held-out digits -> {args.out}"
    )


if __name__ == "__main__":
    main()
