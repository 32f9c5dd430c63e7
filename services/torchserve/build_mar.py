"""Packs the TorchScript file and the custom handler into `<model-store>/<name>.mar`, and
the no-op twin's handler into `<model-store>/<name>_noop.mar`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from digitnet.noop import noop_model_name
from digitnet.spec import ModelSpec

HERE = Path(__file__).resolve().parent
HANDLER = HERE / "handler.py"
NOOP_HANDLER = HERE / "noop_handler.py"
MODEL_CONFIG = HERE / "model-config.yaml"


def _archive(name: str, spec: ModelSpec, handler: Path, model_store: Path,
             extra: Sequence[str] = ()) -> Path:  # fmt: skip
    model_store.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            str(Path(sys.executable).parent / "torch-model-archiver"),
            "--model-name", name,
            "--version", str(spec.version),
            "--handler", str(handler),
            "--config-file", str(MODEL_CONFIG),
            "--export-path", str(model_store),
            "--force",
            *extra,
        ],
        check=True,
    )  # fmt: skip
    return model_store / f"{name}.mar"


def build_mar(torchscript: Path, model_store: Path, spec: ModelSpec) -> Path:
    """Runs torch-model-archiver and returns the path of the archive.

    The handler imports `digitnet` from the serving environment (installed in the venv
    and in the image), so the payload schema is not copied into the archive.
    """
    return _archive(spec.name, spec, HANDLER, model_store,
                    ["--serialized-file", str(torchscript)])  # fmt: skip


def build_noop_mar(model_store: Path, spec: ModelSpec) -> Path:
    """The no-op twin's archive: its handler and the same model-config.yaml, no model
    file (the handler loads none). Local runs only: the image copies digitnet.mar alone."""
    return _archive(noop_model_name(spec), spec, NOOP_HANDLER, model_store)
