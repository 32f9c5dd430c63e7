"""Security checks the stack-specific tests do not already make.

Covered elsewhere, not repeated here: TorchServe refuses calls without the right key,
refuses registering a model from a URL, keeps management and metrics on loopback and
allowed_urls to the model store (tests/services/torchserve/test_integration.py and
test_config.py); oversized bodies get 413 on every stack (the matrix, test_matrix.py);
Flask's unexpected errors answer JSON without internals (tests/services/flask_torch).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.lifecycle import RunningStack
from reliability.client import Connection, Endpoint, endpoint_of
from reliability.robustness import LEAK_MARKERS

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted(REPO.glob("services/*/Dockerfile"))
KEY_FILE = "key_file.json"


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=30)  # fmt: skip


@pytest.fixture(scope="module")
def in_git_checkout() -> None:
    if shutil.which("git") is None or git("rev-parse", "--git-dir").returncode != 0:
        pytest.skip("not a git checkout")


def test_no_torchserve_key_file_is_committed(in_git_checkout: None) -> None:
    tracked = git("ls-files").stdout.splitlines()
    assert not [path for path in tracked if Path(path).name == KEY_FILE]


@pytest.mark.parametrize("where", [KEY_FILE, f"services/torchserve/{KEY_FILE}",
                                   f"run/torchserve/{KEY_FILE}"])
def test_gitignore_keeps_key_files_out_wherever_torchserve_writes_them(
    in_git_checkout: None, where: str
) -> None:
    # check-ignore exits 0 when the path is ignored (it need not exist).
    assert git("check-ignore", "--quiet", where).returncode == 0, where


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_image_runs_as_a_numeric_non_root_user(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users, "no USER: the image would run as root"
    user = users[-1].split(":")[0]
    # Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
    assert user.isdigit() and int(user) != 0, users[-1]
    last_user = text.rindex("\nUSER ")
    assert "\nRUN " not in text[last_user:], "a RUN after USER would run as that user"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_image_starts_from_a_slim_pinned_base(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.MULTILINE))
    bases = [re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], m[0]), base)
             for base in re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)]
    assert bases
    for base in bases:
        assert ":" in base and not base.endswith(":latest"), base
        assert "slim" in base or "@sha256:" in base, f"{base}: not a minimal base image"


@pytest.mark.integration
@pytest.mark.parametrize("path", ["/console", "/debug", "/v1/models/digitnet:predict/../x"])
def test_no_debugger_or_html_error_page_is_served(running: RunningStack, path: str) -> None:
    endpoint = endpoint_of(running)
    probe = Endpoint(endpoint.host, endpoint.port, path, endpoint.headers)
    reply = Connection(probe, 10.0, fresh=True).post(b"{}")
    text = reply.body.decode(errors="replace").lower()
    assert reply.status is not None and 400 <= reply.status < 500, reply
    assert not any(marker.lower() in text for marker in LEAK_MARKERS), text[:300]
    assert "werkzeug" not in text and "debugger" not in text
