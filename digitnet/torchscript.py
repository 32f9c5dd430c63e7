"""TorchScript export and load, shared by TorchServe and the Flask app."""

from __future__ import annotations

from pathlib import Path

import torch

from digitnet.torch_net import DigitConvNet


def export_torchscript(model: DigitConvNet, path: Path) -> Path:
    """Scripts `model` (eval mode) and writes it to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scripted = torch.jit.script(model.eval())
    scripted.save(str(path))
    return path


def load_torchscript(path: Path, device: str = "cpu") -> torch.jit.ScriptModule:
    """Loads a scripted model for inference on `device`."""
    model = torch.jit.load(str(path), map_location=device)
    model.eval()
    return model
