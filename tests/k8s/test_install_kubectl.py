"""scripts/install_kubectl.sh offline: releases served from a file:// folder laid out as
dl.k8s.io's, with a correct and a wrong checksum, and one that is not there."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from k8s import validate

SCRIPT = validate.ROOT / "scripts" / "install_kubectl.sh"
PINNED = re.search(r'KUBECTL_VERSION="\$\{KUBECTL_VERSION:-(v[0-9.]+)\}"', SCRIPT.read_text())[1]
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)

pytestmark = pytest.mark.skipif(shutil.which("curl") is None,
                                reason="the script downloads with curl")


def release(root: Path, version: str, checksum_of: bytes | None = None) -> Path:
    """A stand-in release: a kubectl that prints its version, and its .sha256 file (of
    `checksum_of` instead of the binary when given: a tampered download)."""
    folder = root / version / "bin" / "linux" / ARCH
    folder.mkdir(parents=True)
    binary = f"#!/bin/sh\necho 'Client Version: {version}'\n".encode()
    (folder / "kubectl").write_bytes(binary)
    digest = hashlib.sha256(binary if checksum_of is None else checksum_of).hexdigest()
    (folder / "kubectl.sha256").write_text(digest)
    return root


def install(base_url: str, dest: Path, version: str = PINNED) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBECTL_BASE_URL": base_url, "KUBECTL_VERSION": version}
    return subprocess.run(["bash", str(SCRIPT), str(dest)], capture_output=True, text=True,
                          env=env, check=False)  # fmt: skip


def test_the_pin_is_a_release_version():
    assert re.fullmatch(r"v1\.\d+\.\d+", PINNED)


def test_a_verified_download_is_installed_without_root(tmp_path):
    mirror = release(tmp_path / "mirror", PINNED)
    dest = tmp_path / "home" / ".local" / "bin"
    result = install(f"file://{mirror}", dest)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"installed {dest}/kubectl ({PINNED}" in result.stdout
    assert os.access(dest / "kubectl", os.X_OK)
    out = subprocess.run([dest / "kubectl", "version", "--client"], capture_output=True,
                         text=True, check=True)  # fmt: skip
    assert out.stdout.strip() == f"Client Version: {PINNED}"
    # Again: already that version, nothing downloaded (the mirror may be gone by then).
    shutil.rmtree(mirror)
    again = install(f"file://{mirror}", dest)
    assert again.returncode == 0 and "already" in again.stdout


def test_a_wrong_checksum_is_refused_and_nothing_installed(tmp_path):
    mirror = release(tmp_path / "mirror", PINNED, checksum_of=b"another binary")
    dest = tmp_path / "bin"
    result = install(f"file://{mirror}", dest)
    assert result.returncode == 1
    assert "REFUSED: sha256" in result.stderr and "Nothing was installed" in result.stderr
    assert not (dest / "kubectl").exists()


def test_another_version_is_chosen_with_the_variable(tmp_path):
    mirror = release(tmp_path / "mirror", "v1.30.2")
    result = install(f"file://{mirror}", tmp_path / "bin", version="v1.30.2")
    assert result.returncode == 0, result.stderr
    assert "installed" in result.stdout and "v1.30.2" in result.stdout


def test_an_unreachable_download_says_what_to_do(tmp_path):
    result = install(f"file://{tmp_path / 'nowhere'}", tmp_path / "bin")
    assert result.returncode == 2
    assert "could not download" in result.stderr
    assert "KUBECTL_BASE_URL=file://<folder>" in result.stderr
    assert f"<folder>/{PINNED}/bin/linux/{ARCH}/" in result.stderr
    assert not (tmp_path / "bin" / "kubectl").exists()


def test_make_installs_it_into_the_venv_when_none_is_found(tmp_path):
    mirror = release(tmp_path / "mirror", PINNED)
    venv = tmp_path / "venv"
    result = subprocess.run(
        ["make", "-s", "k8s-kubectl", f"VENV={venv}", f"KUBECTL={venv}/bin/kubectl",
         f"KUBECTL_BASE_URL=file://{mirror}"],
        capture_output=True, text=True, cwd=validate.ROOT, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert (venv / "bin" / "kubectl").exists()


def test_every_kubectl_hint_points_at_the_installer():
    makefile = (validate.ROOT / "Makefile").read_text()
    readme = (validate.K8S_DIR / "README.md").read_text()
    for text in (validate.KUBECTL_HELP, makefile, readme):
        assert "apt-get install kubectl" not in text
    assert "make k8s-kubectl" in validate.KUBECTL_HELP
    assert "scripts/install_kubectl.sh" in makefile and "make k8s-kubectl" in readme
