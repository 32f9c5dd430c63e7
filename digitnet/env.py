"""Reading numbers from environment variables, with the variable named in every error."""

from __future__ import annotations

import os
from collections.abc import Mapping


def env_optional_int(name: str) -> int | None:
    """None when `name` is unset or empty, else its value as an integer."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def env_int(name: str, default: int) -> int:
    """`default` when `name` is unset or empty, else its value as an integer."""
    value = env_optional_int(name)
    return default if value is None else value


def env_float(name: str, default: float) -> float:
    """`default` when `name` is unset or empty, else its value as a number."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def env_str(name: str, default: str) -> str:
    """`default` when `name` is unset or empty, else its value."""
    return os.environ.get(name, "").strip() or default


def env_bool(name: str, default: bool, environ: Mapping[str, str] | None = None) -> bool:
    """`default` when `name` is unset or empty in `environ` (this process's environment
    unless given); else on/off, true/false, yes/no or 1/0."""
    raw = (os.environ if environ is None else environ).get(name, "").strip().lower()
    if not raw:
        return default
    if raw in TRUE_WORDS:
        return True
    if raw in FALSE_WORDS:
        return False
    raise ValueError(f"{name} must be one of {TRUE_WORDS + FALSE_WORDS}, got {raw!r}")


def env_int_pair(name: str, default: tuple[int, int]) -> tuple[int, int]:
    """`default` when `name` is unset or empty, else two integers written "a,b"."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    parts = raw.split(",")
    try:
        first, second = (int(part) for part in parts)
    except ValueError:
        raise ValueError(f"{name} must be two integers like 16,32, got {raw!r}") from None
    return first, second
