"""Fixtures for the offline Kubernetes checks: rendered overlays and a scratch copy of
k8s/ to plant mistakes in. Everything here needs kubectl (it renders, no cluster)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from k8s import validate

requires_kubectl = pytest.mark.skipif(
    shutil.which("kubectl") is None, reason=validate.KUBECTL_HELP
)


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict]]:
    """Overlay name -> its rendered objects (`kubectl kustomize k8s/overlays/<name>`)."""
    if shutil.which("kubectl") is None:
        pytest.skip(validate.KUBECTL_HELP)
    return {
        overlay: validate.load_objects(validate.render(validate.K8S_DIR / "overlays" / overlay))
        for overlay in validate.OVERLAYS
    }


@pytest.fixture
def k8s_copy(tmp_path: Path) -> Path:
    """A scratch copy of k8s/ (base and overlays render from it as from the real one)."""
    if shutil.which("kubectl") is None:
        pytest.skip(validate.KUBECTL_HELP)
    copy = tmp_path / "k8s"
    shutil.copytree(validate.K8S_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


@pytest.fixture(scope="session")
def lint_venv() -> Path:
    """The checkov tool venv, created once by the script `make k8s-validate` uses
    (about 20 s from PyPI the first time on a machine, then a hash-stamp check)."""
    subprocess.run(
        ["bash", str(validate.K8S_DIR / "bootstrap_lint_venv.sh"), str(validate.LINT_VENV)],
        check=True,
        cwd=validate.ROOT,
    )
    return validate.LINT_VENV
