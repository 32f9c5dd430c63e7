"""The serving stacks this project compares, in the order reports list them.

This is the only list of stacks: adding one is its folder under services/ (with a
`STACK = <ServingStack subclass>()` in the module named here) and one line below.
"""

from __future__ import annotations

import importlib

from services.stack import ServingStack

STACK_MODULES: dict[str, str] = {
    "tf_serving": "services.tf_serving.launch",
    "torchserve": "services.torchserve.launch",
    "flask_torch": "services.flask_torch.launch",
    "flask_tf": "services.flask_tf.launch",
    "ray_serve": "services.ray_serve.launch",
}


def stack_names() -> list[str]:
    return list(STACK_MODULES)


def load_stack(name: str) -> ServingStack:
    """The plugin named `name` (imported on demand: each pulls in its framework)."""
    if name not in STACK_MODULES:
        raise KeyError(f"unknown stack {name!r}; known: {', '.join(STACK_MODULES)}")
    stack = importlib.import_module(STACK_MODULES[name]).STACK
    if stack.name != name:
        raise ValueError(f"{STACK_MODULES[name]}.STACK is named {stack.name!r}, not {name!r}")
    return stack


def all_stacks() -> list[ServingStack]:
    return [load_stack(name) for name in STACK_MODULES]


def parse_stacks(text: str) -> list[str]:
    """A comma-separated list of registered stack names, checked.

    Raises:
        ValueError: naming the unknown ones.
    """
    names = [name for name in text.split(",") if name]
    unknown = sorted(set(names) - set(STACK_MODULES))
    if unknown:
        raise ValueError(f"unknown stacks {unknown}; known: {', '.join(STACK_MODULES)}")
    return names
