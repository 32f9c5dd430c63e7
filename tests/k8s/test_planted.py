"""Each check of k8s/validate.py catches the mistake it is there for: a copy of k8s/ gets
one planted mistake, and the overlay's validation must name it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from k8s import validate


def plant(k8s_copy: Path, file: str, old: str, new: str) -> None:
    path = k8s_copy / file
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} must occur once in {file}"
    path.write_text(text.replace(old, new))


def problems_of(k8s_copy: Path, overlay: str) -> list[str]:
    _text, problems = validate.validate_overlay(
        k8s_copy / "overlays" / overlay, validate.OVERLAYS[overlay]
    )
    return problems


TORCHSERVE_SERVICE_PORT = """    - name: http
      port: 8080
      targetPort: http
      protocol: TCP
"""
FLASK_LIVENESS = """          livenessProbe:
            httpGet:
              path: /healthz
              port: http
            periodSeconds: 20
            timeoutSeconds: 3
            failureThreshold: 3
"""
FLASK_RESOURCES = """          resources:
            requests: {cpu: "2", memory: 2Gi}
            limits: {cpu: "2", memory: 2Gi}
"""

PLANTED = [
    pytest.param(
        "gpu", "overlays/gpu/gpu-servers.yaml",
        "path: /spec/template/spec/containers/0/resources/limits/nvidia.com~1gpu",
        "path: /spec/template/spec/containers/0/resources/limits/example.com~1fpga",
        "no limits.nvidia.com/gpu in the GPU overlay", id="gpu-limit-removed"),
    pytest.param(
        "cpu", "base/flask-torch.yaml", FLASK_RESOURCES,
        FLASK_RESOURCES.replace("limits: {cpu", 'limits: {nvidia.com/gpu: "1", cpu'),
        "asks for nvidia.com/gpu but should not", id="gpu-in-cpu-overlay"),
    pytest.param(
        "gpu", "overlays/gpu/gpu-servers.yaml", "    - key: nvidia.com/gpu\n",
        "    - key: example.com/accelerator\n",
        "no toleration for the nvidia.com/gpu taint", id="gpu-toleration-removed"),
    pytest.param(
        "cpu", "overlays/cpu/kustomization.yaml",
        '  - name: digitnet-flask-torch\n    newTag: "0.1.0"',
        '  - name: digitnet-flask-torch\n    newTag: "latest"',
        "image 'digitnet-flask-torch:latest' is not pinned", id="image-latest"),
    pytest.param(
        "gpu", "overlays/gpu/kustomization.yaml",
        '  - name: digitnet-locust\n    newTag: "0.1.0"\n', "",
        "image 'digitnet-locust' is not pinned", id="image-untagged"),
    pytest.param(
        "cpu", "base/torchserve.yaml", TORCHSERVE_SERVICE_PORT,
        TORCHSERVE_SERVICE_PORT + "    - name: admin\n      port: 8081\n      protocol: TCP\n",
        "Service/torchserve: exposes a private port", id="service-management-port"),
    pytest.param(
        "cpu", "base/torchserve.yaml", TORCHSERVE_SERVICE_PORT,
        TORCHSERVE_SERVICE_PORT + "    - name: management\n      port: 9000\n      protocol: TCP\n",
        "Service/torchserve: exposes a private port", id="service-port-named-management"),
    pytest.param(
        "cpu", "base/torchserve.yaml", "  type: ClusterIP\n", "  type: LoadBalancer\n",
        "type LoadBalancer, expected ClusterIP", id="service-load-balancer"),
    pytest.param(
        "gpu", "base/flask-torch.yaml", "          readinessProbe:\n",
        "          readinesProbe:\n", "readinesProbe", id="misspelled-field"),
    pytest.param(
        "cpu", "base/tf-serving.yaml", "        runAsUser: 65534\n", "        runAsUser: 0\n",
        "pod runs as root", id="run-as-root"),
    pytest.param(
        "cpu", "base/torchserve.yaml", "            allowPrivilegeEscalation: false\n",
        "            allowPrivilegeEscalation: true\n",
        "container torchserve: allowPrivilegeEscalation is not false", id="privilege-escalation"),
    pytest.param(
        "cpu", "base/flask-torch.yaml", '              drop: ["ALL"]\n',
        '              drop: ["NET_RAW"]\n',
        "capabilities do not drop ALL", id="capabilities-kept"),
    pytest.param(
        "cpu", "base/loadgen.yaml", "                readOnlyRootFilesystem: true\n",
        "                readOnlyRootFilesystem: false\n",
        "container locust: readOnlyRootFilesystem is not true", id="writable-root"),
    pytest.param(
        "gpu", "base/torchserve.yaml", "          type: RuntimeDefault\n",
        "          type: Unconfined\n",
        "seccompProfile is 'Unconfined'", id="seccomp-unconfined"),
    pytest.param(
        "cpu", "base/flask-torch.yaml", FLASK_LIVENESS, "",
        "container flask-torch: no livenessProbe", id="probe-removed"),
    pytest.param(
        "cpu", "base/tf-serving.yaml",
        "            limits: {cpu: 100m, memory: 64Mi}\n          securityContext: &container",
        "          securityContext: &container",
        "container copy-model: no limits.cpu", id="init-container-limits-removed"),
    pytest.param(
        "cpu", "base/loadgen.yaml", "      activeDeadlineSeconds: 36000\n", "",
        "batch pod without activeDeadlineSeconds", id="job-without-deadline"),
    pytest.param(
        "cpu", "base/tf-serving.yaml", "            - --tensorflow_intra_op_parallelism=2\n",
        "            - --tensorflow_intra_op_parallelism=4\n",
        "tf_serving args differ from what its plugin generates", id="tf-flags-drift"),
    pytest.param(
        "gpu", "base/networkpolicy.yaml", "        - port: 8080\n          protocol: TCP\n---\n",
        "        - port: 8080\n          protocol: TCP\n        - port: 8081\n---\n",
        "port 8081 is not an inference port", id="policy-opens-management"),
    pytest.param(
        "cpu", "base/networkpolicy.yaml", '  podSelector: {}\n  policyTypes: ["Ingress", "Egress"]',
        '  podSelector: {}\n  policyTypes: ["Ingress"]',
        "no default-deny NetworkPolicy", id="default-deny-narrowed"),
    pytest.param(
        "cpu", "base/torchserve.yaml", "  replicas: 1\n", "  replicas: 2\n",
        "Deployment/torchserve: replicas 2; must be 1", id="torchserve-scaled"),
    pytest.param(
        "gpu", "base/kustomization.yaml", "  - networkpolicy.yaml\n",
        "  - networkpolicy.yaml\n  - missing.yaml\n",
        "kubectl kustomize", id="kustomize-error"),
]


@pytest.mark.parametrize(("overlay", "file", "old", "new", "expected"), PLANTED)
def test_a_planted_mistake_is_named(k8s_copy, overlay, file, old, new, expected):
    plant(k8s_copy, file, old, new)
    problems = problems_of(k8s_copy, overlay)
    assert any(expected in problem for problem in problems), problems


def test_a_drifted_tf_serving_config_copy_is_named(k8s_copy):
    assert validate.generated_config_problems(k8s_copy) == []
    copy = k8s_copy / "base" / "tf-serving-config" / "batching_parameters.txt"
    copy.write_text(copy.read_text().replace("max_batch_size { value: 64 }",
                                             "max_batch_size { value: 32 }"))  # fmt: skip
    (problem,) = validate.generated_config_problems(k8s_copy)
    assert "batching_parameters.txt is not what tf_serving generates" in problem


def test_the_cli_fails_on_a_planted_mistake_and_passes_without(k8s_copy):
    command = [sys.executable, "-m", "k8s.validate", "--no-lint", "--k8s-dir", str(k8s_copy)]
    clean = subprocess.run(command, capture_output=True, text=True, cwd=validate.ROOT,
                           check=False)  # fmt: skip
    assert clean.returncode == 0, clean.stdout + clean.stderr
    plant(k8s_copy, "overlays/cpu/kustomization.yaml",
          '  - name: tensorflow/serving\n    newTag: "2.21.0"', "  - name: tensorflow/serving")
    planted = subprocess.run(command, capture_output=True, text=True, cwd=validate.ROOT,
                             check=False)  # fmt: skip
    assert planted.returncode == 1
    assert "FAIL overlay cpu" in planted.stdout
    assert "image 'tensorflow/serving' is not pinned" in planted.stdout
