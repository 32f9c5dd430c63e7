"""Whether a measurement tool from the distro (nginx, wrk) runs here, and its version."""

from __future__ import annotations

import subprocess


def probe(name: str, binary: str | None, hint: str, exit_zero: bool = True) -> tuple[bool, str]:
    """Runs `binary -v` once.

    Args:
        name: the tool, for the messages.
        binary: its path, or None when it was not found.
        hint: how to get it (scripts/install_tools.sh), appended to every refusal.
        exit_zero: whether `-v` must exit 0 (wrk prints its version and usage, exits 1).

    Returns:
        (True, its first version line) or (False, why not and how to get it).
    """
    if binary is None:
        return False, f"{name} is not installed: {hint}"
    try:
        done = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as err:
        return False, f"{name} at {binary} does not run ({err}): {hint}"
    lines = (done.stderr or done.stdout).strip().splitlines()
    version = lines[0] if lines else binary
    if exit_zero and done.returncode != 0:
        return False, f"{name} at {binary} failed: {version}: {hint}"
    return True, version
