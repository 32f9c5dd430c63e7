"""Each check of k8s/validate.py catches the mistake it is there for: a copy of k8s/ gets
one planted mistake, and the overlay's validation must name it."""

from __future__ import annotations

import re
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
            tcpSocket:
              port: http
            periodSeconds: 20
            timeoutSeconds: 3
            failureThreshold: 3
"""
TF_LIVENESS = "          livenessProbe:\n            tcpSocket:\n              port: grpc\n"
GFD_SELECTOR = """- op: add
  path: /spec/template/spec/nodeSelector
  value:
    nvidia.com/gpu.present: "true"
"""
GPU_TORCHSERVE_TAG = '  - name: digitnet-torchserve\n    newTag: "0.1.0-cu130"\n'
NVIDIA_PATH = ('              value: "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:'
               '/sbin:/bin:\\\n                /usr/local/nvidia/bin"\n')
NVIDIA_LIB = "            - name: LD_LIBRARY_PATH\n              value: /usr/local/nvidia/lib64\n"
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
    # Issue 13: a CUDA flavour torch does not publish, builds of the wrong kind.
    pytest.param(
        "gpu", "overlays/gpu/kustomization.yaml", GPU_TORCHSERVE_TAG,
        GPU_TORCHSERVE_TAG.replace("cu130", "cu128"),
        "CUDA flavour cu128 is not one torch publishes wheels for", id="cuda-flavour-cu128"),
    pytest.param(
        "gpu", "overlays/gpu/kustomization.yaml", GPU_TORCHSERVE_TAG,
        GPU_TORCHSERVE_TAG.replace("-cu130", ""),
        "no -<cuda flavour> tag, a CPU build in the GPU overlay", id="cpu-build-in-gpu-overlay"),
    pytest.param(
        "gpu", "overlays/gpu/kustomization.yaml", GPU_TORCHSERVE_TAG,
        GPU_TORCHSERVE_TAG.replace("cu130", "cu126"),
        "the torch images mix CUDA flavours", id="cuda-flavours-mixed"),
    pytest.param(
        "cpu", "overlays/cpu/kustomization.yaml",
        '  - name: digitnet-flask-torch\n    newTag: "0.1.0"',
        '  - name: digitnet-flask-torch\n    newTag: "0.1.0-cu130"',
        "a CUDA build in an overlay without GPUs", id="cuda-build-in-cpu-overlay"),
    # Issue 13: a node label only GPU feature discovery sets, made mandatory.
    pytest.param(
        "gpu", "overlays/gpu/gpu-servers.yaml", "      effect: NoSchedule\n",
        "      effect: NoSchedule\n" + GFD_SELECTOR,
        "requires node label nvidia.com/gpu.present, which only an add-on sets",
        id="gfd-selector-mandatory"),
    pytest.param(
        "gpu", "overlays/gpu/gpu-servers.yaml", "      effect: NoSchedule\n",
        "      effect: NoSchedule\n- op: add\n  path: /spec/template/spec/affinity\n  value:\n"
        "    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n"
        "        nodeSelectorTerms:\n          - matchExpressions:\n"
        "              - {key: feature.node.kubernetes.io/pci-10de.present, operator: Exists}\n",
        "requires node label feature.node.kubernetes.io/pci-10de.present",
        id="nfd-affinity-mandatory"),
    # Issue 13: the driver's /usr/local/nvidia paths.
    pytest.param(
        "gpu", "overlays/gpu/flask-torch-gpu.yaml", NVIDIA_LIB, "",
        "container flask-torch: /usr/local/nvidia/lib64 is not on LD_LIBRARY_PATH",
        id="nvidia-lib-missing"),
    pytest.param(
        "gpu", "overlays/gpu/torchserve-gpu.yaml", NVIDIA_PATH,
        "              value: /usr/local/nvidia/bin\n",
        "container torchserve: PATH /usr/local/nvidia/bin clobbers the image's PATH",
        id="path-clobbered"),
    pytest.param(
        "gpu", "overlays/gpu/torchserve-gpu.yaml", NVIDIA_PATH,
        '              value: "$(PATH):/usr/local/nvidia/bin"\n',
        "clobbers the image's PATH", id="path-image-variable-not-expanded"),
    pytest.param(
        "gpu", "overlays/gpu/flask-torch-gpu.yaml", "            - name: PATH\n",
        "            - name: NOT_PATH\n",
        "container flask-torch: /usr/local/nvidia/bin is not on PATH", id="nvidia-bin-missing"),
    # Issue 13: a liveness probe through the port under test.
    pytest.param(
        "cpu", "base/tf-serving.yaml", TF_LIVENESS,
        "          livenessProbe:\n            httpGet:\n              path: /v1/models/digitnet\n"
        "              port: http\n",
        "container tf-serving: livenessProbe httpGet on inference port http",
        id="tf-liveness-on-rest-port"),
    pytest.param(
        "gpu", "base/tf-serving.yaml", TF_LIVENESS,
        "          livenessProbe:\n            grpc:\n              port: 8500\n",
        "container tf-serving: livenessProbe grpc on inference port 8500",
        id="tf-liveness-grpc-probe"),
    pytest.param(
        "cpu", "base/tf-serving.yaml", TF_LIVENESS,
        "          livenessProbe:\n            exec:\n              command: *model-available\n",
        "container tf-serving: livenessProbe exec connects to inference port 8501",
        id="tf-liveness-exec-on-rest-port"),
    pytest.param(
        "cpu", "base/flask-torch.yaml", FLASK_LIVENESS,
        FLASK_LIVENESS.replace("tcpSocket:\n              port: http",
                               "httpGet:\n              path: /healthz\n              port: http"),
        "container flask-torch: livenessProbe httpGet on inference port http",
        id="flask-liveness-on-http-port"),
    pytest.param(
        "cpu", "base/torchserve.yaml", "            tcpSocket:\n              port: http\n",
        "            httpGet:\n              path: /ping\n              port: 8080\n",
        "container torchserve: livenessProbe httpGet on inference port 8080",
        id="torchserve-liveness-on-http-port"),
    # Issue 13: a single-process in-cluster Locust: no worker pods, or none scaled.
    pytest.param(
        "cpu", "base/kustomization.yaml", "  - loadgen-workers.yaml\n", "",
        "no Locust worker pods (app.kubernetes.io/component=loadgen-worker, at least one "
        "replica): the in-cluster Locust would be a single process", id="single-process-locust"),
    pytest.param(
        "gpu", "base/loadgen-workers.yaml", "  replicas: 2\n", "  replicas: 0\n",
        "no Locust worker pods", id="no-locust-workers-scaled"),
    pytest.param(
        "cpu", "base/loadgen-workers.yaml", '            limits: {cpu: "1", memory: 2Gi}\n',
        '            limits: {cpu: "2", memory: 2Gi}\n',
        "container locust-worker: CPU limit 2: a worker pod runs one Locust process",
        id="locust-worker-two-cpus"),
    pytest.param(
        "cpu", "base/loadgen-workers.yaml", '            requests: {cpu: "1", memory: 2Gi}\n',
        '            requests: {cpu: 500m, memory: 2Gi}\n',
        "container locust-worker: CPU request 500m differs from its limit 1",
        id="locust-worker-shares-cpu"),
    pytest.param(
        "cpu", "base/loadgen.yaml", '                requests: {cpu: "2", memory: 2Gi}\n'
        '                limits: {cpu: "2", memory: 2Gi}\n',
        '                requests: {cpu: "1", memory: 2Gi}\n'
        '                limits: {cpu: "1", memory: 2Gi}\n',
        "container locust: CPU limit 1: the master, wrk and the calibration's Locust would "
        "share one CPU", id="loadgen-pod-one-cpu"),
    pytest.param(
        "cpu", "base/disruption-budgets.yaml",
        "      app.kubernetes.io/component: loadgen-worker\n",
        "      app.kubernetes.io/component: loadgen-workers\n",
        "loadgen-worker: no PodDisruptionBudget selects it", id="locust-workers-evictable"),
    pytest.param(
        "gpu", "base/loadgen.yaml", '                requests: {cpu: "2", memory: 2Gi}\n'
        '                limits: {cpu: "2", memory: 2Gi}\n',
        '                requests: {cpu: 1500m, memory: 2Gi}\n'
        '                limits: {cpu: 1500m, memory: 2Gi}\n',
        "container locust: CPU limit 1500m is not a whole number of CPUs",
        id="fractional-locust"),
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


def test_the_gpu_feature_discovery_component_adds_the_label_the_overlay_may_not(k8s_copy):
    overlay = k8s_copy / "overlays" / "gpu"
    component = ("gpu-feature-discovery",)
    text, problems = validate.validate_overlay(overlay, True, component)
    assert problems == []
    servers = [p for p in validate.pod_templates(validate.load_objects(text)) if p.is_server]
    assert len(servers) == 4
    for pod in servers:
        assert pod.spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}, pod.name
    # The component is validated on top of the overlay, so a mistake in it is named too
    # (here a label value that is no string, which the schema refuses).
    plant(k8s_copy, "components/gpu-feature-discovery/node-selector.yaml",
          'nvidia.com/gpu.present: "true"', "nvidia.com/gpu.present: true")
    _text, problems = validate.validate_overlay(overlay, True, component)
    assert any("spec/template/spec/nodeSelector/nvidia.com/gpu.present" in p
               for p in problems), problems  # fmt: skip


TORCH_DOCKERFILES = {p.parent.name: p for p in validate.TORCH_DOCKERFILES}


def test_the_torch_dockerfiles_install_one_index_and_assert_cuda():
    assert set(TORCH_DOCKERFILES) == {"torchserve", "flask_torch", "ray_serve"}
    assert validate.torch_dockerfile_problems() == []


@pytest.mark.parametrize("stack", ["torchserve", "flask_torch", "ray_serve"])
@pytest.mark.parametrize(("old", "new", "expected"), [
    pytest.param('--index-url "${TORCH_INDEX_URL}"',
                 '--index-url "${TORCH_INDEX_URL}" --extra-index-url https://pypi.org/simple',
                 "a fallback package index (--extra-index-url)", id="pypi-fallback"),
    pytest.param("--no-deps --index-url", "--index-url",
                 "torch is not installed alone (--no-deps)", id="torch-with-deps"),
    pytest.param("torch.version.cuda", "torch.__version__",
                 "no build step asserts torch.version.cuda", id="cuda-not-asserted"),
])  # fmt: skip
def test_a_planted_torch_dockerfile_mistake_is_named(tmp_path, stack, old, new, expected):
    source = TORCH_DOCKERFILES[stack].read_text()
    assert old in source
    planted = tmp_path / "Dockerfile"
    planted.write_text(source.replace(old, new))
    problems = validate.torch_dockerfile_problems((planted,))
    assert any(expected in p for p in problems), problems


def build_check(dockerfile: Path) -> str:
    """The Python the Dockerfile runs to compare torch.version.cuda with the index."""
    found = re.search(r"python -c '(.*torch\.version\.cuda.*)' \"\$\{TORCH_INDEX_URL\}\"",
                      dockerfile.read_text())  # fmt: skip
    assert found, f"{dockerfile}: no torch.version.cuda check"
    return found[1]


@pytest.mark.parametrize("stack", ["torchserve", "flask_torch", "ray_serve"])
@pytest.mark.parametrize(("flavor", "cuda", "ok"), [
    ("cpu", None, True), ("cu130", "13.0", True), ("cu126", "12.6", True),
    ("cu130", "12.6", False), ("cu126", None, False), ("cpu", "13.0", False),
    ("rocm6.2", None, False),
])  # fmt: skip
def test_the_build_fails_unless_torch_is_the_flavour_of_its_index(tmp_path, stack, flavor,
                                                                    cuda, ok):
    # A stand-in torch module: what the wheel pip picked reports, without installing one.
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text(
        f"__version__ = '2.13.0+stub'\nclass version:\n    cuda = {cuda!r}\n")
    url = f"https://download.pytorch.org/whl/{flavor}"
    result = subprocess.run([sys.executable, "-c", build_check(TORCH_DOCKERFILES[stack]), url],
                            capture_output=True, text=True, check=False,
                            env={"PYTHONPATH": str(tmp_path)})  # fmt: skip
    assert (result.returncode == 0) is ok, result.stdout + result.stderr
    if not ok:
        assert f"has CUDA {cuda}, but {url} promises" in result.stderr
