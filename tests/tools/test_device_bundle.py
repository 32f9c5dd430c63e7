"""tools/device_bundle.py and scripts/device_gpu_bench.sh: what is carried to the lent GPU
machine, the plan of device calls against the carry limit, the cut Java runtime (a real
TorchServe starts on it), and the script's refusals."""

from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import ExitStack
from pathlib import Path

import pytest

from harness.lifecycle import start_stack
from harness.payload import PayloadSet, check_answer
from tools import device_bundle

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "device_gpu_bench.sh"


def touch(path: Path, size: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)
    return path


def test_wheels_the_image_has_are_left_to_it(tmp_path):
    for name in ("Flask-3.1.3-py3-none-any.whl", "numpy-2.4.6-cp312-cp312-x.whl",
                 "charset_normalizer-3.5.3-cp312-cp312-x.whl", "typing_extensions-4.16-py3.whl",
                 "gevent-26.9.0-cp312-cp312-x.whl"):  # fmt: skip
        touch(tmp_path / name)
    removed = device_bundle.prune(tmp_path, device_bundle.DEVICE_HAS)
    assert sorted(p.name for p in tmp_path.glob("*.whl")) == [
        "Flask-3.1.3-py3-none-any.whl", "gevent-26.9.0-cp312-cp312-x.whl"]
    assert len(removed) == 3
    # What the run needs is never among what the image is trusted to have.
    wanted = {device_bundle.normalize(p) for p in device_bundle.PACKAGES}
    assert not wanted & (device_bundle.DEVICE_HAS - {"pyyaml"})


def test_the_plan_splits_torchserve_from_its_java_runtime_and_checks_each_call(tmp_path,
                                                                              monkeypatch):
    out = tmp_path / ".device"
    touch(out / "wheels" / "a.whl", 8 * 2**20)
    touch(out / "artifacts" / "model.pt", 2**20)
    touch(out / "torchserve" / "torchserve.whl", 42 * 2**20)
    touch(out / "jre.tar.xz", 28 * 2**20)
    monkeypatch.setattr(device_bundle, "ROOT", tmp_path)
    plan = {c["call"]: c for c in device_bundle.carry_plan(out, tree=4 * 2**20)}
    assert [c["carry"] for c in plan.values()] == [
        [".device/wheels", ".device/artifacts"], [".device/jre.tar.xz"],
        [".device/wheels", ".device/artifacts", ".device/torchserve"]]  # fmt: skip
    assert all(c["fits"] for c in plan.values())
    assert plan["torchserve, then (machine still warm)"]["bytes"] == (4 + 8 + 1 + 42) * 2**20
    # Together, TorchServe's wheel and the runtime would not fit one call.
    assert (4 + 8 + 1 + 42 + 28) * 2**20 > device_bundle.CARRY_LIMIT
    touch(out / "torchserve" / "torchserve.whl", 60 * 2**20)
    assert not device_bundle.carry_plan(out, tree=4 * 2**20)[2]["fits"]


def run_script(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT):
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=120)  # fmt: skip


def test_the_script_refuses_what_was_not_carried(tmp_path):
    bundle = tmp_path / ".device"
    env = {"DEVICE_BUNDLE": str(bundle), "DEVICE_JRE": str(tmp_path / "jre"),
           "DEVICE_VENV": str(tmp_path / "venv")}  # fmt: skip
    result = run_script("flask_torch", env=env)
    assert result.returncode == 2 and "wheels was not carried" in result.stderr
    (bundle / "wheels").mkdir(parents=True)
    (bundle / "artifacts").mkdir()
    result = run_script("torchserve", env=env)
    assert result.returncode == 2 and "torchserve needs" in result.stderr
    (bundle / "torchserve").mkdir()
    result = run_script("flask_torch,torchserve", env=env)
    assert result.returncode == 2 and "run --unpack-jre first" in result.stderr
    assert not (tmp_path / "venv").exists()  # refused before installing anything


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("jlink") is None, reason="no JDK (jlink) here")
def test_torchserve_starts_and_answers_on_the_cut_java_runtime(artifacts, tmp_path):
    """The runtime of JAVA_MODULES, packed and unpacked as the device calls do, runs a
    real TorchServe (java.desktop was found missing this way: log4j needs java.beans)."""
    jre = device_bundle.build_jre(tmp_path / "jre")
    archive = device_bundle.pack(jre, tmp_path / "bundle" / "jre.tar.xz")
    shutil.rmtree(jre)
    unpacked = tmp_path / "device" / "jre"
    result = run_script("--unpack-jre", env={"DEVICE_BUNDLE": str(archive.parent),
                                             "DEVICE_JRE": str(unpacked)})  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert 'version "17' in result.stderr  # java -version, from the unpacked runtime
    env = {"JAVA_HOME": str(unpacked), "PATH": f"{unpacked / 'bin'}:{os.environ['PATH']}"}
    with ExitStack() as exits:
        running = start_stack("torchserve", artifacts, tmp_path / "server", exits, env=env)
        batch = PayloadSet(artifacts.spec, 1, artifacts.reference_predictions,
                           limit=1).batches[0]  # fmt: skip
        logits, classes = running.clients[0].predict(batch.images)
        assert check_answer(batch, logits, classes) is None
        java = [p for p in _tree(running.server.pid) if p.endswith("/java")]
        assert java and all(p.startswith(str(unpacked)) for p in java)


def _tree(pid: int) -> list[str]:
    import psutil

    proc = psutil.Process(pid)
    found = []
    for member in [proc, *proc.children(recursive=True)]:
        try:
            found.append(member.exe())
        except psutil.Error:
            pass
    return found
