"""The device a server actually computes on, read back before every point.

A point is labelled with the device it was asked for (the runner's cpu/cuda rows, the
cluster's --device). A server that falls back to the CPU by itself (no CUDA in its image,
no GPU given to its worker) still answers, and without this check its CPU figures would be
reported as GPU figures. Our servers name the device in every answered prediction
(digitnet.codec.DEVICE_HEADER); here one real request reads it, and a point whose server
computes elsewhere than asked is refused before any load is sent.
"""

from __future__ import annotations

from collections.abc import Mapping

import requests

from digitnet.codec import DEVICE_HEADER, JSON_CONTENT_TYPE
from services.stack import CPU, CUDA

UNREPORTED = "unreported"


class DeviceMismatch(RuntimeError):
    """The server computes on another device than the point was asked for."""


def device_kind(served: str) -> str:
    """"cpu" or "cuda" for a torch-style device string ("cuda:1" -> "cuda")."""
    return served.split(":", 1)[0].strip().lower()


def read_back(url: str, body: bytes, headers: Mapping[str, str], timeout_s: float = 10.0
              ) -> str | None:
    """The device named by the reply to one real prediction, None when the server names
    none (TF Serving adds no headers of its own).

    Raises:
        RuntimeError: the server did not answer the prediction with a 200.
    """
    sent = {"Content-Type": JSON_CONTENT_TYPE, **headers}
    response = requests.post(url, data=body, headers=sent, timeout=timeout_s)
    if response.status_code != 200:
        raise RuntimeError(f"device read-back: {url} answered {response.status_code}: "
                           f"{response.text[:200]}")
    return response.headers.get(DEVICE_HEADER)


def check(target_key: str, asked: str, served: str | None, reports_device: bool) -> str:
    """The device to record for a point, or DeviceMismatch when it must be refused.

    Args:
        target_key: stack/protocol/device, for the message.
        asked: the device the point was asked for (cpu or cuda).
        served: what the server said it computes on (None: it said nothing).
        reports_device: whether the stack's plugin promises the header.
    """
    if served is None:
        if reports_device:
            raise DeviceMismatch(f"{target_key}: the server's reply names no device "
                                 f"({DEVICE_HEADER} missing), so a {asked} point cannot be "
                                 "trusted; is an older image or handler running?")
        # Nothing to compare: recorded as such, and the report says the device is unverified.
        return UNREPORTED
    if device_kind(served) not in (CPU, CUDA) or device_kind(served) != asked:
        raise DeviceMismatch(
            f"{target_key}: asked for {asked} but the server computes on {served!r}; "
            + (f"it fell back to the CPU (no CUDA in its torch, or no GPU given to its "
               f"worker), so its figures would be CPU figures labelled {asked}"
               if asked == CUDA else "a CPU point must not use a GPU")
            + ". Refused."
        )
    return served
