"""The no-op twin's handler inside TorchServe's real worker code (no Java): the fixed reply
for every request of a batch, whatever its body, with the predict handler's status line
and content type, and without a model file in its archive."""

from __future__ import annotations

import json
import zipfile

from digitnet.artifacts import ArtifactPaths
from digitnet.codec import (
    APP_STAGE,
    JSON_CONTENT_TYPE,
    STAGE_HEADER,
    decode_predictions,
    encode_request,
    parse_server_timing,
)
from digitnet.data import DigitsSplit
from digitnet.noop import noop_reply
from digitnet.spec import ModelSpec
from services.torchserve.launch import noop_mar_path
from services.torchserve.worker_frames import FrontendRequest


def test_every_request_of_a_batch_gets_the_fixed_reply_without_being_decoded(
    noop_worker, split: DigitsSplit, spec: ModelSpec
) -> None:
    good = FrontendRequest(json.dumps(encode_request(split.test_images[:1])).encode())
    replies = noop_worker([good, FrontendRequest(b"{not json"),
                           FrontendRequest(b"", content_type="text/plain")])  # fmt: skip

    assert [r.status for r in replies] == [200, 200, 200]
    assert [r.phrase for r in replies] == ["OK", "OK", "OK"]
    assert all(r.content_type == JSON_CONTENT_TYPE for r in replies)
    assert all(r.body == noop_reply(spec) for r in replies)
    # Each reply names the handler's span and nothing else: it decodes and computes nothing.
    assert all(list(parse_server_timing(r.headers[STAGE_HEADER])) == [APP_STAGE]
               for r in replies)  # fmt: skip
    # A well-formed prediction of the model's shape, as a client reads one.
    logits, classes = decode_predictions(replies[0].json(), 1, spec.num_classes)
    assert logits.shape == (1, spec.num_classes) and classes.shape == (1,)


def test_the_twin_archive_holds_its_handler_and_no_model(artifacts: ArtifactPaths) -> None:
    with zipfile.ZipFile(noop_mar_path(artifacts)) as archive:
        manifest = json.loads(archive.read("MAR-INF/MANIFEST.json"))
        names = archive.namelist()
    assert manifest["model"]["handler"] == "noop_handler.py"
    assert "serializedFile" not in manifest["model"]
    assert not any(name.endswith(".pt") for name in names)
