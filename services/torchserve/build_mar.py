"""Packs the TorchScript file and the custom handler into `<model-store>/<name>.mar`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from digitnet.spec import ModelSpec

HERE = Path(__file__).resolve().parent
HANDLER = HERE / "handler.py"
MODEL_CONFIG = HERE / "model-config.yaml"


def build_mar(torchscript: Path, model_store: Path, spec: ModelSpec) -> Path:
    """Runs torch-model-archiver and returns the path of the archive.

    The handler imports `digitnet` from the serving environment (installed in the venv
    and in the image), so the payload schema is not copied into the archive.
    """
    model_store.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            str(Path(sys.executable).parent / "torch-model-archiver"),
            "--model-name", spec.name,
            "--version", str(spec.version),
            "--serialized-file", str(torchscript),
            "--handler", str(HANDLER),
            "--config-file", str(MODEL_CONFIG),
            "--export-path", str(model_store),
            "--force",
        ],
        check=True,
    )
    return model_store / f"{spec.name}.mar"
