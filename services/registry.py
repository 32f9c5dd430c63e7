"""The serving stacks this project compares, in the order reports list them."""

from __future__ import annotations

import importlib

from services.stack import LocalStack

STACK_MODULES = {
    "tf_serving": "services.tf_serving.launch",
    "torchserve": "services.torchserve.launch",
    "flask_torch": "services.flask_torch.launch",
}


def load_stack(name: str) -> LocalStack:
    """The LocalStack named `name` (imported on demand: each pulls in its framework)."""
    if name not in STACK_MODULES:
        raise KeyError(f"unknown stack {name!r}; known: {', '.join(STACK_MODULES)}")
    return importlib.import_module(STACK_MODULES[name]).STACK


def all_stacks() -> list[LocalStack]:
    return [load_stack(name) for name in STACK_MODULES]
