"""services/ray_serve/Dockerfile, read statically (no container engine here): it runs the
server launch.py runs, with the settings' own variables, the proxy alone on 0.0.0.0, the
pinned versions, and sends the build only what it copies."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest

from services.ray_serve.launch import STACK
from services.ray_serve.settings import (
    HOST,
    HTTP_HOST_ENV,
    HTTP_PORT_ENV,
    METRICS_PORT_ENV,
    MODEL_PATH_ENV,
    STATUS_FILE_ENV,
    TEMP_DIR_ENV,
)

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / STACK.image[1]
IGNORE = DOCKERFILE.with_name("Dockerfile.dockerignore")


@pytest.fixture(scope="module")
def text() -> str:
    return DOCKERFILE.read_text()


@pytest.fixture(scope="module")
def env(text: str) -> dict[str, str]:
    """The image's ENV values (continuation lines joined)."""
    joined = text.replace("\\\n", " ")
    found: dict[str, str] = {}
    for line in joined.splitlines():
        if line.startswith("ENV "):
            found.update(re.findall(r"(\w+)=(\S+)", line))
    return found


def test_every_pip_install_keeps_no_cache_and_ray_is_the_locked_pin(text):
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    pip_installs = re.findall(r"pip install[^\n]*", code)
    assert len(pip_installs) == 2
    assert all("--no-cache-dir" in line for line in pip_installs)
    lock = (ROOT / "requirements.lock").read_text()
    (ray_pin,) = re.findall(r'"ray\[serve\]==([\d.]+)"', text)
    assert f"ray=={ray_pin}\n" in lock
    assert "--constraint requirements.lock" in text


def test_it_runs_the_server_that_launch_runs_as_a_non_root_user(text):
    assert 'CMD ["python", "-m", "services.ray_serve.server"]' in text
    # tini without -g: SIGTERM reaches server.py alone, which shuts Serve and Ray down.
    assert 'ENTRYPOINT ["tini", "--"]' in text
    assert STACK.signal_plan().process_group is False
    assert re.search(r"^USER\s+(?!(root|0)\b)\d+", text, re.MULTILINE)
    assert re.search(r"^FROM python:\d+\.\d+\.\d+-slim-\w+$", text, re.MULTILINE)


def test_only_the_inference_port_leaves_the_containers_loopback(text, env):
    http = STACK.default_ports["http"]
    assert env[HTTP_HOST_ENV] == "0.0.0.0" and env[HTTP_PORT_ENV] == str(http)
    assert int(env[METRICS_PORT_ENV]) in STACK.private_ports
    assert re.findall(r"^EXPOSE (.+)$", text, re.MULTILINE) == [str(http)]
    # Ray's own addresses are not configurable to anything but loopback.
    assert HOST == "127.0.0.1"
    # The health check asks a replica through the proxy, on that port.
    assert f"http://127.0.0.1:{http}/readyz" in text


def test_writable_paths_are_under_tmp_and_the_model_is_the_artifact(env):
    for name in (TEMP_DIR_ENV, STATUS_FILE_ENV, "RAY_TMPDIR", "HOME"):
        assert env[name].startswith("/tmp"), name
    model = env[MODEL_PATH_ENV]
    assert model == "/app/artifacts/torchscript/digitnet.torchscript.pt"


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins."""
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        bare = pattern.removeprefix("!").rstrip("/")
        if fnmatch.fnmatch(path, bare) or path.startswith(bare + "/"):
            result = not negate
    return result


def test_the_build_context_holds_every_file_it_copies(text):
    patterns = [line.strip() for line in IGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]  # fmt: skip
    copied = []
    for line in text.replace("\\\n", " ").splitlines():
        if line.startswith("COPY "):
            copied += line.split()[1:-1]
    assert "artifacts/torchscript/digitnet.torchscript.pt" in copied
    for source in copied:
        assert not ignored(source.rstrip("/"), patterns), source
    assert ignored(".venv", patterns) and ignored("artifacts/tf_serving", patterns)
