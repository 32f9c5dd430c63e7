"""TF Serving's image version is one variable (k8s/images.py TF_SERVING_VERSION): compose,
both overlays and the docs name it, it equals the tensorflow-serving-api pin unless a
reason is declared, and the registry check says MISSING / NOT CHECKED clearly."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from k8s import cluster, images, validate
from tools import configs

ROOT = validate.ROOT


def copy_tree(tmp_path: Path) -> Path:
    """The files tf_serving_version_problems reads, in a scratch root."""
    root = tmp_path / "root"
    for path in [*images.tf_serving_files(ROOT), ROOT / "requirements.lock",
                 ROOT / "pyproject.toml"]:  # fmt: skip
        target = root / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    return root


def test_the_repository_names_one_tf_serving_version_everywhere():
    assert images.tf_serving_version_problems() == []
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["tf-serving"]["image"] == images.tf_serving_ref(gpu=False)
    for overlay, gpu in validate.OVERLAYS.items():
        kustomization = yaml.safe_load(
            (validate.K8S_DIR / "overlays" / overlay / "kustomization.yaml").read_text())
        (entry,) = [i for i in kustomization["images"] if i["name"] == images.TF_SERVING_IMAGE]
        assert f"{images.TF_SERVING_IMAGE}:{entry['newTag']}" == images.tf_serving_ref(gpu)


def test_the_version_equals_the_serving_api_pin():
    for name in ("requirements.lock", "pyproject.toml"):
        pin = images.pinned_version((ROOT / name).read_text(), images.TF_SERVING_API)
        assert pin == images.TF_SERVING_VERSION, name


def test_another_version_without_a_reason_is_refused_and_with_one_allowed(tmp_path):
    root = copy_tree(tmp_path)
    problems = images.tf_serving_version_problems(root, version="2.20.0", differs="")
    assert any("differs from requirements.lock's tensorflow-serving-api==2.21.0" in p
               for p in problems), problems  # fmt: skip
    # With a reason the pin may differ, but every file must still name the version.
    problems = images.tf_serving_version_problems(root, version="2.20.0",
                                                  differs="no 2.21 image yet")  # fmt: skip
    assert not any("differs from" in p for p in problems)
    assert {Path(p.split()[0]).name for p in problems} == {
        "docker-compose.yml", "docker-compose.gpu.yml", "kustomization.yaml", "README.md"}


def test_make_configs_writes_the_version_into_compose_overlays_and_docs(tmp_path):
    root = copy_tree(tmp_path)
    for path, gpu in images.tf_serving_files(root).items():
        path.write_text(images.with_tf_serving_version(path, path.read_text(), gpu, "2.19.1"))
    assert images.tf_serving_version_problems(root, version="2.19.1", differs="x") == []
    compose = (root / "docker-compose.yml").read_text()
    assert "image: tensorflow/serving:2.19.1\n" in compose
    gpu_overlay = (root / "k8s/overlays/gpu/kustomization.yaml").read_text()
    assert 'newTag: "2.19.1-gpu"' in gpu_overlay
    assert "image: tensorflow/serving:2.19.1-gpu\n" in (root / "docker-compose.gpu.yml").read_text()
    # Back to the variable's value: exactly the committed files again.
    for path, text in images.tf_serving_generated_files(root).items():
        assert text == (ROOT / path.relative_to(root)).read_text(), path


def test_a_drifted_overlay_is_named_by_the_validator_and_make_configs(tmp_path, monkeypatch):
    root = copy_tree(tmp_path)
    overlay = root / "k8s/overlays/cpu/kustomization.yaml"
    overlay.write_text(overlay.read_text().replace('newTag: "2.21.0"', 'newTag: "2.20.0"'))
    (problem,) = images.tf_serving_version_problems(root)
    assert "cpu/kustomization.yaml names another TF Serving version" in problem
    assert "make configs" in problem
    monkeypatch.setattr(configs, "tf_serving_generated_files",
                        lambda: images.tf_serving_generated_files(root))
    assert overlay in configs.stale_files()


def test_the_wrong_build_in_an_overlay_is_refused(tmp_path):
    root = copy_tree(tmp_path)
    overlay = root / "k8s/overlays/cpu/kustomization.yaml"
    overlay.write_text(overlay.read_text().replace('newTag: "2.21.0"', 'newTag: "2.21.0-gpu"'))
    (problem,) = images.tf_serving_version_problems(root)
    assert "is the GPU build" in problem


def fake_engine(tmp_path: Path, script: str) -> str:
    engine = tmp_path / "docker"
    engine.write_text(f"#!/bin/sh\n{script}\n")
    engine.chmod(0o755)
    return str(engine)


def test_check_images_names_a_missing_tag_and_how_to_pick_another(tmp_path):
    engine = fake_engine(tmp_path, 'case "$*" in *-gpu*) echo "no such manifest: '
                                   'docker.io/$4" >&2; exit 1;; esac; echo "{}"')
    checks = cluster.check_images([images.tf_serving_ref(False), images.tf_serving_ref(True)],
                                  engine)  # fmt: skip
    assert [c.state for c in checks] == [cluster.EXISTS, cluster.MISSING]
    line = checks[1].line()
    assert line.startswith(f"MISSING {images.tf_serving_ref(True)}")
    assert "TF_SERVING_VERSION in k8s/images.py" in line and "make configs" in line


def test_check_images_says_not_checked_without_a_registry_answer(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no skopeo either
    engine = fake_engine(tmp_path, 'echo "dial tcp: lookup registry-1.docker.io: no such host"'
                                   " >&2; exit 1")
    (check,) = cluster.check_images([images.tf_serving_ref(False)], engine)
    assert check.state == cluster.UNCHECKED and "no such host" in check.detail
    (check,) = cluster.check_images([images.tf_serving_ref(False)], str(tmp_path / "none"))
    assert check.state == cluster.UNCHECKED and "no `" in check.detail
    result = subprocess.run(
        [sys.executable, "-m", "k8s.cluster", "check-images", "--engine", str(tmp_path / "none")],
        capture_output=True, text=True, cwd=ROOT, check=False,
        env={**os.environ, "PATH": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stdout.count("NOT CHECKED") == 2


def test_a_failed_pull_names_the_image_and_the_way_out():
    pods = {"items": [{
        "metadata": {"name": "tf-serving-abc"},
        "status": {"containerStatuses": [{
            "image": "tensorflow/serving:2.21.0-gpu",
            "state": {"waiting": {"reason": "ImagePullBackOff",
                                  "message": "manifest unknown"}}}]},
    }, {
        "metadata": {"name": "flask-torch-abc"},
        "status": {"containerStatuses": [{"image": "r/digitnet-flask-torch:1",
                                          "state": {"running": {}}}]},
    }]}  # fmt: skip
    (problem,) = cluster.pull_problems(pods)
    assert "cannot pull tensorflow/serving:2.21.0-gpu (ImagePullBackOff" in problem
    assert "TF_SERVING_VERSION" in problem


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_apply_refuses_a_missing_tf_serving_tag_before_applying(tmp_path, monkeypatch, overlay):
    engine = fake_engine(tmp_path, 'echo "manifest unknown" >&2; exit 1')
    monkeypatch.setattr(cluster, "run_kubectl", lambda *a, **k: pytest.fail("applied"))
    with pytest.raises(cluster.ClusterError, match="not in the registry; nothing applied"):
        cluster.apply(overlay, "", "0.1.0", "cu130", engine=engine)
