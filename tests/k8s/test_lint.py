"""The linters `make k8s-validate` runs (checkov, yamllint, hadolint): clean on the
repository, and each catches a planted mistake of the kind it is there for."""

from __future__ import annotations

from pathlib import Path

import pytest

from k8s import validate


@pytest.fixture(scope="module")
def rendered_text(rendered) -> dict[str, str]:
    # `rendered` first: it skips the module's checkov tests where kubectl is missing.
    return {o: validate.render(validate.K8S_DIR / "overlays" / o) for o in validate.OVERLAYS}


def test_checkov_passes_the_overlays_and_dockerfiles(lint_venv, rendered_text):
    assert validate.checkov_problems(rendered_text, venv=lint_venv) == []


def test_checkov_catches_a_privileged_container(lint_venv, rendered_text):
    text = rendered_text["gpu"].replace("privileged: false", "privileged: true", 1)
    problems = validate.checkov_problems({"gpu": text}, dockerfiles=(), venv=lint_venv)
    assert any("CKV_K8S_16" in p for p in problems), problems


def test_checkov_catches_a_dockerfile_running_as_root(lint_venv, tmp_path):
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text('FROM busybox:1.37.0\nHEALTHCHECK CMD ["true"]\nCMD ["sleep", "1"]\n')
    problems = validate.checkov_problems({}, dockerfiles=(dockerfile,), venv=lint_venv)
    assert any("CKV_DOCKER_3" in p for p in problems), problems


def test_yamllint_passes_the_repository_yaml():
    assert validate.yamllint_problems() == []


def test_yamllint_catches_broken_formatting(tmp_path):
    manifest = tmp_path / "bad.yaml"
    source = (validate.K8S_DIR / "base" / "namespace.yaml").read_text()
    manifest.write_text(source.replace("  name: digitnet-serving", "  name: digitnet-serving   ")
                        + "key: [1,2]\nkey: 3\n")  # fmt: skip
    problems = "\n".join(validate.yamllint_problems((manifest,)))
    assert "trailing-spaces" in problems and "key-duplicates" in problems


def test_hadolint_passes_every_dockerfile():
    assert validate.hadolint_problems() == []


def test_hadolint_catches_unpinned_bases_and_packages(tmp_path: Path):
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "FROM python:latest\nRUN apt-get update && apt-get install -y curl\n"
        "RUN pip install locust\nUSER 1000\n"
    )
    problems = "\n".join(validate.hadolint_problems((dockerfile,)))
    for rule in ("DL3007", "DL3008", "DL3013"):
        assert rule in problems, problems
