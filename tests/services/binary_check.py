"""The one real-server check of the binary body, shared by every torch stack's
integration test: the binary client (digitnet.clients.with_codec) gets the JSON client's
logits, the reply is binary, and a bad binary body gets a JSON 4xx."""

from __future__ import annotations

import numpy as np
import requests

from digitnet.binary_codec import BINARY_CONTENT_TYPE
from digitnet.clients import RestClient, with_codec
from digitnet.codec import DEVICE_HEADER, JSON_CONTENT_TYPE
from digitnet.wire import BINARY_WIRE
from reliability.matrix import BAD_REQUESTS

BAD = next(case for case in BAD_REQUESTS if case.name == "binary_wrong_length")


def check_binary_against_json(json_client: RestClient, images: np.ndarray) -> None:
    """Predicts `images` at batch 1 and in chunks of 64 through both codecs."""
    binary = with_codec(json_client, BINARY_WIRE)
    assert binary.label.endswith("+binary") and binary.url == json_client.url
    for chunk in (images[:1], images[:64]):
        logits, classes = binary.predict(chunk)
        expected, expected_classes = json_client.predict(chunk)
        np.testing.assert_allclose(logits, expected, atol=1e-6, rtol=0)
        np.testing.assert_array_equal(classes, expected_classes)
    reply = binary.post_raw(images[:2])
    assert reply.headers["Content-Type"].startswith(BINARY_CONTENT_TYPE)
    assert DEVICE_HEADER in reply.headers
    bad = requests.post(binary.url, data=BAD.body, timeout=binary.timeout_s,
                        headers={"Content-Type": BAD.content_type, **binary.headers})
    assert bad.status_code == BAD.status, bad.text[:300]
    assert bad.headers["Content-Type"].startswith(JSON_CONTENT_TYPE)
    assert bad.json()["reason"] == BAD.reason
    json_client.predict(images[:1])
