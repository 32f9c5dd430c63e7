"""Where the trained model's files live; every stack and test reads paths from here.

Layout under the artifacts directory (git-ignored, rebuilt by `make artifacts`):
  metrics.json                         test accuracy, spec, training config
  torch/<name>.pt                      torch state dict (the trained weights)
  torchscript/<name>.torchscript.pt    the TorchScript model (TorchServe, Flask)
  tf_serving/<name>/<version>/         the SavedModel (TF Serving, Flask + TF)
  reference_predictions.json           TorchScript logits and classes on the test split,
                                       the answer key load tests check replies against
  <stack>/...                          what a stack builds from these (TorchServe's .mar)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from digitnet.spec import ModelSpec

DEFAULT_ARTIFACTS = Path(os.environ.get("DIGITNET_ARTIFACTS", "artifacts"))


@dataclass(frozen=True)
class ArtifactPaths:
    """The model formats every stack serves from; a stack's own artifacts live under
    `stack_dir(<stack>)`."""

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

    def stack_dir(self, stack: str) -> Path:
        """The folder for what stack `stack` builds from the shared model files."""
        return self.root / stack

    def shared_files(self) -> list[Path]:
        return [
            self.metrics,
            self.state_dict,
            self.torchscript,
            self.savedmodel,
            self.reference_predictions,
        ]
