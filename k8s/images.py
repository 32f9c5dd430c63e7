"""The project images `make images` builds, and the torch CUDA builds they may carry.

One place for both: k8s/cluster.py builds and deploys them, k8s/validate.py checks the
overlays' tags and the Dockerfiles against them (it cannot import cluster.py, which
imports it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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
