"""The project images `make images` builds, and the torch CUDA builds they may carry.

One place for both: k8s/cluster.py builds and deploys them, k8s/validate.py checks the
overlays' tags and the Dockerfiles against them (it cannot import cluster.py, which
imports it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from services.registry import all_stacks
from services.stack import CUDA

# torch wheel index flavour -> the torch.version.cuda its wheels report. torch==2.13.0
# (requirements.lock) publishes CUDA wheels for these two only (cu128 ended with 2.11):
# cu130 needs an NVIDIA driver >= 580; cu126 is for older ones (CUDA 12.x drivers, >= 525).
SUPPORTED_CUDA_FLAVORS = {"cu130": "13.0", "cu126": "12.6"}
DEFAULT_CUDA_FLAVOR = "cu130"
TORCH_WHEEL_INDEX = "https://download.pytorch.org/whl/{flavor}"
# The tag suffix of a CUDA variant: <tag>-<flavour>.
CUDA_TAG_SUFFIX = re.compile(r"-(cu\d+)$")


@dataclass(frozen=True)
class ProjectImage:
    """One image `make images` builds; names equal those in the overlays' `images:`."""

    name: str
    dockerfile: str
    # Built a second time with CUDA torch, tagged <tag>-<cuda flavor>, for the GPU overlay.
    cuda_variant: bool = False


PROJECT_IMAGES = (
    ProjectImage("digitnet-model", "k8s/model-image/Dockerfile"),
    *(ProjectImage(s.image[0], s.image[1], cuda_variant=CUDA in s.devices)
      for s in all_stacks() if s.image),
    ProjectImage("digitnet-locust", "loadtests/Dockerfile"),
)


class UnsupportedCudaFlavor(ValueError):
    """A CUDA flavour torch publishes no wheels for; the message lists the ones it does."""


def check_cuda_flavor(flavor: str) -> str:
    """Returns `flavor` when torch publishes wheels for it.

    Raises:
        UnsupportedCudaFlavor: naming the supported flavours.
    """
    if flavor not in SUPPORTED_CUDA_FLAVORS:
        raise UnsupportedCudaFlavor(
            f"CUDA flavour {flavor!r}: torch (requirements.lock) publishes CUDA wheels for "
            f"{', '.join(SUPPORTED_CUDA_FLAVORS)} only; use CUDA_FLAVOR={DEFAULT_CUDA_FLAVOR} "
            "(cu126 for drivers older than 580)"
        )
    return flavor


# --- TF Serving: the official image the project runs but does not build -----------------
# The one place its version is set. docker-compose.yml, both overlays and the READMEs are
# written from it (`make configs`; `make k8s-validate` and tests/k8s fail when they
# drift), and it must equal the tensorflow-serving-api pin our clients use
# (requirements.lock, pyproject.toml) unless TF_SERVING_VERSION_DIFFERS says why. TF
# Serving's images have lagged its releases (2.20's came about a year after TensorFlow
# 2.20): `make k8s-check-images` asks the registry whether both tags exist.
TF_SERVING_IMAGE = "tensorflow/serving"
TF_SERVING_VERSION = "2.21.0"
TF_SERVING_GPU_SUFFIX = "-gpu"
# Why TF_SERVING_VERSION may differ from the tensorflow-serving-api pin; "" = it may not.
# E.g. "2.21.0 has no image yet; the 2.20 server reads the same PredictRequest protos".
TF_SERVING_VERSION_DIFFERS = ""
TF_SERVING_API = "tensorflow-serving-api"
TF_SERVING_TAGS_URL = "https://hub.docker.com/r/tensorflow/serving/tags"
HOW_TO_PICK_TF_SERVING = (
    f"pick a version listed at {TF_SERVING_TAGS_URL} (with its -gpu tag), set "
    "TF_SERVING_VERSION in k8s/images.py (and TF_SERVING_VERSION_DIFFERS: why it differs "
    f"from the {TF_SERVING_API} pin), then `make configs` rewrites compose, the overlays "
    "and the docs"
)
ROOT = Path(__file__).resolve().parents[1]
_VERSION = r"\d+\.\d+\.\d+"
# `tensorflow/serving:2.21.0` or `...:2.21.0-gpu`, in compose and the docs.
_IMAGE_REF = re.compile(rf"(?<![\w/.-]){re.escape(TF_SERVING_IMAGE)}:(?P<v>{_VERSION})"
                        rf"(?P<gpu>{TF_SERVING_GPU_SUFFIX})?(?![\w.])")  # fmt: skip
# An overlay's `images:` entry: `- name: tensorflow/serving` then `newTag: "2.21.0[-gpu]"`.
_OVERLAY_TAG = re.compile(rf'(?P<head>- name: {re.escape(TF_SERVING_IMAGE)}\n\s+newTag: ")'
                          rf'(?P<v>{_VERSION})(?P<gpu>{TF_SERVING_GPU_SUFFIX})?"')  # fmt: skip


def tf_serving_ref(gpu: bool, version: str = TF_SERVING_VERSION) -> str:
    """tensorflow/serving:<version>, or its -gpu build."""
    return f"{TF_SERVING_IMAGE}:{version}{TF_SERVING_GPU_SUFFIX if gpu else ''}"


def tf_serving_files(root: Path = ROOT, k8s_dir: Path | None = None) -> dict[Path, bool | None]:
    """The committed files that name the TF Serving image -> whether each must name the
    -gpu build (True), the CPU one (False), or may name either (None: the docs)."""
    k8s_dir = root / "k8s" if k8s_dir is None else k8s_dir
    return {
        root / "docker-compose.yml": False,
        root / "docker-compose.gpu.yml": True,
        k8s_dir / "overlays" / "cpu" / "kustomization.yaml": False,
        k8s_dir / "overlays" / "gpu" / "kustomization.yaml": True,
        root / "README.md": None,
        k8s_dir / "README.md": None,
    }


def with_tf_serving_version(path: Path, text: str, gpu: bool | None,
                            version: str = TF_SERVING_VERSION) -> str:
    """`text` of `path` with every TF Serving tag set to `version` (the -gpu suffix kept);
    `gpu` as in tf_serving_files.

    Raises:
        ValueError: when a compose file or overlay names no TF Serving tag (it would then
            escape the check), or one names the wrong build (-gpu in the CPU overlay).
    """
    pattern = _OVERLAY_TAG if path.name == "kustomization.yaml" else _IMAGE_REF
    found = list(pattern.finditer(text))
    if not found and path.suffix != ".md":
        raise ValueError(f"{path}: names no {TF_SERVING_IMAGE}:<x.y.z> tag to set")
    for match in found:
        if gpu is not None and bool(match["gpu"]) != gpu:
            raise ValueError(f"{path}: {match[0]!r} is the {'CPU' if gpu else 'GPU'} build")

    def replace(match: re.Match) -> str:
        head = match.groupdict().get("head") or f"{TF_SERVING_IMAGE}:"
        tail = '"' if pattern is _OVERLAY_TAG else ""
        return f"{head}{version}{match['gpu'] or ''}{tail}"

    return pattern.sub(replace, text)


def tf_serving_generated_files(root: Path = ROOT, k8s_dir: Path | None = None) -> dict[Path, str]:
    """What `make configs` writes: each file of tf_serving_files with TF_SERVING_VERSION."""
    return {path: with_tf_serving_version(path, path.read_text(), gpu)
            for path, gpu in tf_serving_files(root, k8s_dir).items() if path.exists()}


def pinned_version(text: str, package: str) -> str | None:
    """The `package==X` pin in a requirements file or a pyproject dependency list."""
    found = re.search(rf'^\s*"?{re.escape(package)}==(?P<v>[^\s";,]+)', text, re.MULTILINE)
    return found["v"] if found else None


def tf_serving_version_problems(
    root: Path = ROOT, k8s_dir: Path | None = None, version: str = TF_SERVING_VERSION,
    differs: str = TF_SERVING_VERSION_DIFFERS,
) -> list[str]:
    """TF_SERVING_VERSION equals the tensorflow-serving-api pin (or says why not), and
    every file of tf_serving_files names it (offline; whether the tag exists in the
    registry is `make k8s-check-images`)."""
    problems = []
    for name in ("requirements.lock", "pyproject.toml"):
        pin = pinned_version((root / name).read_text(), TF_SERVING_API)
        if pin is None:
            problems.append(f"{name}: no {TF_SERVING_API}==<version> pin")
        elif pin != version and not differs.strip():
            problems.append(
                f"TF_SERVING_VERSION {version} (k8s/images.py) differs from {name}'s "
                f"{TF_SERVING_API}=={pin} and TF_SERVING_VERSION_DIFFERS gives no reason"
            )
    for path, gpu in tf_serving_files(root, k8s_dir).items():
        if not path.exists():
            continue
        text = path.read_text()
        try:
            expected = with_tf_serving_version(path, text, gpu, version)
        except ValueError as err:
            problems.append(str(err))
            continue
        if expected != text:
            problems.append(f"{path} names another TF Serving version than TF_SERVING_VERSION "
                            f"{version} (k8s/images.py); rewrite it: make configs")
    return problems
