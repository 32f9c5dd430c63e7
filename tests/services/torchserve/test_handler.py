"""The handler inside TorchServe's real worker code (no Java): per-request statuses in a
dynamic batch, logits equal to TorchScript's, and one named 4xx per kind of bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from digitnet.artifacts import ArtifactPaths
from digitnet.binary_codec import (
    BINARY_CONTENT_TYPE,
    decode_binary_predictions,
    encode_binary_request,
)
from digitnet.codec import (
    APP_STAGE,
    BATCH_HEADER,
    DEVICE_HEADER,
    INFERENCE_TIME_HEADER,
    JSON_CONTENT_TYPE,
    STAGE_HEADER,
    PayloadError,
    encode_request,
    parse_server_timing,
)
from digitnet.data import DigitsSplit
from digitnet.spec import ModelSpec
from digitnet.torchscript import load_torchscript
from reliability.matrix import BAD_REQUESTS, BadRequest, good_body
from services.torchserve.handler import (
    THREADS_ENV,
    request_content_type,
    select_codec,
    torch_threads,
)
from services.torchserve.worker_frames import FrontendRequest

ATOL = 1e-5
# config.properties sets decode_input_request=false; TorchServe's default is true.
BOTH_DECODE_MODES = pytest.mark.parametrize("decode_input_request", ["false", "true"])


def as_arrays(reply_json: dict) -> tuple[np.ndarray, np.ndarray]:
    rows = reply_json["predictions"]
    return (
        np.asarray([row["logits"] for row in rows], dtype=np.float32),
        np.asarray([row["classes"] for row in rows]),
    )


@pytest.fixture(scope="module")
def scripted(artifacts: ArtifactPaths) -> torch.jit.ScriptModule:
    return load_torchscript(artifacts.torchscript)


def reference(model: torch.jit.ScriptModule, images: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(images)).numpy()


@BOTH_DECODE_MODES
def test_one_bad_request_does_not_fail_its_batch(worker, split: DigitsSplit, scripted) -> None:
    first, second = split.test_images[:3], split.test_images[3:8]
    replies = worker([
        FrontendRequest(json.dumps(encode_request(first)).encode()),
        FrontendRequest(json.dumps({"instance": encode_request(first)["instances"]}).encode()),
        FrontendRequest(json.dumps(encode_request(second)).encode()),
    ])

    assert [reply.status for reply in replies] == [200, 400, 200]
    assert [reply.phrase for reply in replies] == ["OK", "Bad Request", "OK"]
    assert all(reply.content_type == JSON_CONTENT_TYPE for reply in replies)
    error = replies[1].json()
    assert error["reason"] == "wrong_schema" and "'instance'" in error["error"]
    for reply, images in ((replies[0], first), (replies[2], second)):
        logits, classes = as_arrays(reply.json())
        expected = reference(scripted, images)
        np.testing.assert_allclose(logits, expected, atol=ATOL, rtol=0)
        np.testing.assert_array_equal(classes, expected.argmax(axis=1))


def test_answered_requests_name_their_device_and_the_requests_of_their_pass(
    worker, split: DigitsSplit
) -> None:
    good = FrontendRequest(json.dumps(encode_request(split.test_images[:2])).encode())
    replies = worker([good, FrontendRequest(b"{not json"), good, good])

    assert [reply.status for reply in replies] == [200, 400, 200, 200]
    for reply in (replies[0], replies[2], replies[3]):
        # No GPU in this worker: the handler computes on the CPU, and says so.
        assert reply.headers[DEVICE_HEADER] == "cpu"
        # The bad request never reached the forward pass: three requests shared it.
        assert reply.headers[BATCH_HEADER] == "3"
        # The one forward pass they shared, timed once for all of them.
        assert float(reply.headers[INFERENCE_TIME_HEADER]) > 0
    assert len({replies[i].headers[INFERENCE_TIME_HEADER] for i in (0, 2, 3)}) == 1
    assert DEVICE_HEADER not in replies[1].headers and BATCH_HEADER not in replies[1].headers
    assert INFERENCE_TIME_HEADER not in replies[1].headers
    assert STAGE_HEADER not in replies[1].headers


def test_answered_requests_name_the_handlers_stages_and_its_span(worker, split: DigitsSplit):
    good = FrontendRequest(json.dumps(encode_request(split.test_images[:2])).encode())
    replies = worker([good, good, good])

    timed = [parse_server_timing(reply.headers[STAGE_HEADER]) for reply in replies]
    for stages in timed:
        assert list(stages) == ["decode", "convert", "model", "encode", APP_STAGE]
        # The span holds this request's own stages and the ones its batch shared.
        assert stages[APP_STAGE] >= sum(v for k, v in stages.items() if k != APP_STAGE) - 0.002
    # The forward pass and its conversion are the batch's, the same in every reply; the
    # header's model stage is the forward pass INFERENCE_TIME_HEADER names.
    assert len({(t["convert"], t["model"]) for t in timed}) == 1
    assert timed[0]["model"] == float(replies[0].headers[INFERENCE_TIME_HEADER])
    # Replies are encoded in order, so each later one's span holds the one before it.
    assert [t[APP_STAGE] for t in timed] == sorted(t[APP_STAGE] for t in timed)


def test_whole_test_split_matches_torchscript(worker, split: DigitsSplit, scripted) -> None:
    images = split.test_images
    requests = [
        FrontendRequest(json.dumps(encode_request(images[start : start + 64])).encode())
        for start in range(0, len(images), 64)
    ]
    replies = worker(requests)

    logits = np.concatenate([as_arrays(reply.json())[0] for reply in replies])
    classes = np.concatenate([as_arrays(reply.json())[1] for reply in replies])
    expected = reference(scripted, images)
    np.testing.assert_allclose(logits, expected, atol=ATOL, rtol=0)
    np.testing.assert_array_equal(classes, expected.argmax(axis=1))
    assert (classes == split.test_labels).mean() > 0.95


def check_error(reply, case: BadRequest) -> None:
    assert reply.status == case.status, reply.body[:300]
    assert reply.content_type == JSON_CONTENT_TYPE
    error = reply.json()
    assert set(error) == {"error", "reason"}
    assert error["reason"] == case.reason
    assert case.needle in error["error"]


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=lambda case: case.name)
def test_bad_request_gets_named_4xx_next_to_a_good_one(worker, case: BadRequest) -> None:
    """With decode_input_request=false (our config) the handler sees the raw bytes."""
    good = FrontendRequest(good_body())
    replies = worker([good, FrontendRequest(case.body, case.content_type), good])

    check_error(replies[1], case)
    assert [replies[0].status, replies[2].status] == [200, 200]
    assert replies[0].body == replies[2].body


@pytest.mark.parametrize(
    "case",
    [case for case in BAD_REQUESTS if case.reason != "body_too_large"],
    ids=lambda case: case.name,
)
@pytest.mark.parametrize("decode_input_request", ["true"])
def test_bad_request_when_worker_decodes_json(worker, case: BadRequest) -> None:
    """TorchServe's default (decode_input_request=true) hands over parsed JSON, or bytes
    when parsing fails; the answer must not change. (Body size is then the frontend's
    max_request_size alone: a parsed body no longer has a size.)"""
    check_error(worker([FrontendRequest(case.body, case.content_type)])[0], case)


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "Application/JSON"]
)
@BOTH_DECODE_MODES
def test_json_content_type_variants_are_accepted(worker, content_type) -> None:
    (reply,) = worker([FrontendRequest(good_body(), content_type)])
    assert reply.status == 200, reply.body


def test_content_type_header_name_is_case_insensitive(worker) -> None:
    request = FrontendRequest(good_body(), None, headers={"content-type": JSON_CONTENT_TYPE})
    (reply,) = worker([request])
    assert reply.status == 200, reply.body


def test_batch_of_only_bad_requests_runs_no_model(worker) -> None:
    replies = worker([FrontendRequest(case.body, case.content_type) for case in BAD_REQUESTS])
    assert [reply.status for reply in replies] == [case.status for case in BAD_REQUESTS]


def test_request_content_type_ignores_parameter_entries() -> None:
    # TorchServe files {"content-type": ...} dicts under parameter names in the same map.
    headers = {"body": {"content-type": "application/json"}, "Content-Type": "text/csv"}
    assert request_content_type(headers) == "text/csv"
    assert request_content_type({"body": {"content-type": "application/json"}}) is None


@pytest.mark.parametrize(
    "value", [None, "", "text/json", "application/jsonp", "application/octet-stream"]
)
def test_only_the_two_codecs_media_types_pass(value) -> None:
    with pytest.raises(PayloadError) as caught:
        select_codec(value)
    assert caught.value.status == 415
    assert caught.value.reason == "unsupported_media_type"
    assert JSON_CONTENT_TYPE in caught.value.message
    assert BINARY_CONTENT_TYPE in caught.value.message


@pytest.mark.parametrize(
    ("value", "codec"),
    [("application/json; charset=utf-8", "json"), (BINARY_CONTENT_TYPE, "binary"),
     ("Application/VND.Digitnet.Tensor", "binary")],
)  # fmt: skip
def test_the_content_type_selects_the_codec(value, codec) -> None:
    assert select_codec(value).name == codec


@pytest.mark.parametrize(("raw", "threads"), [(None, 1), ("", 1), ("3", 3)])
def test_torch_threads_from_env(monkeypatch, raw, threads) -> None:
    if raw is None:
        monkeypatch.delenv(THREADS_ENV, raising=False)
    else:
        monkeypatch.setenv(THREADS_ENV, raw)
    assert torch_threads() == threads


@pytest.mark.parametrize("raw", ["0", "-1", "two", "1.5"])
def test_bad_torch_threads_names_the_variable(monkeypatch, raw) -> None:
    monkeypatch.setenv(THREADS_ENV, raw)
    with pytest.raises(ValueError, match=THREADS_ENV):
        torch_threads()


def test_worker_sets_torch_threads_from_env(worker_service, monkeypatch, spec: ModelSpec):
    """initialize() applies DIGITNET_TORCH_THREADS (the loader's handler instance)."""
    handler = worker_service._entry_point.__self__
    monkeypatch.setenv(THREADS_ENV, "2")
    before = torch.get_num_threads()
    try:
        handler.initialize(worker_service.context)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert handler.spec == spec


@BOTH_DECODE_MODES
def test_each_request_in_a_batch_is_answered_in_its_own_format(
    worker, split: DigitsSplit, scripted
) -> None:
    """TF Serving's columnar form ({"inputs": ...}) gets its columnar answer ({"outputs":
    ...}) next to row requests in the same dynamic batch; both forms at once is a 400."""
    first, second = split.test_images[:2], split.test_images[2:5]
    rows = encode_request(second)["instances"]
    replies = worker([
        FrontendRequest(json.dumps(encode_request(first)).encode()),
        FrontendRequest(json.dumps({"inputs": rows}).encode()),
        FrontendRequest(json.dumps({"inputs": {"images": rows}}).encode()),
        FrontendRequest(json.dumps({"instances": rows, "inputs": rows}).encode()),
    ])  # fmt: skip

    assert [reply.status for reply in replies] == [200, 200, 200, 400]
    np.testing.assert_allclose(as_arrays(replies[0].json())[0], reference(scripted, first),
                               atol=ATOL, rtol=0)  # fmt: skip
    expected = reference(scripted, second)
    for reply in replies[1:3]:
        outputs = reply.json()["outputs"]
        np.testing.assert_allclose(np.asarray(outputs["logits"]), expected, atol=ATOL, rtol=0)
        assert outputs["classes"] == expected.argmax(axis=1).tolist()
    error = replies[3].json()
    assert error["reason"] == "wrong_schema" and "only one of" in error["error"]


@BOTH_DECODE_MODES
def test_a_mixed_batch_answers_each_request_in_its_own_codec(
    worker, split: DigitsSplit, scripted
) -> None:
    """One JSON, one binary and one bad binary request in one dynamic batch: 200 JSON,
    200 binary with the same logits as TorchScript, and a 400 JSON error."""
    first, second = split.test_images[:2], split.test_images[2:5]
    bad = encode_binary_request(second)[:-4]
    replies = worker([
        FrontendRequest(json.dumps(encode_request(first)).encode()),
        FrontendRequest(encode_binary_request(second), BINARY_CONTENT_TYPE),
        FrontendRequest(bad, BINARY_CONTENT_TYPE),
    ])  # fmt: skip

    assert [reply.status for reply in replies] == [200, 200, 400]
    assert [reply.content_type for reply in replies] == [
        JSON_CONTENT_TYPE, BINARY_CONTENT_TYPE, JSON_CONTENT_TYPE]  # fmt: skip
    np.testing.assert_allclose(as_arrays(replies[0].json())[0], reference(scripted, first),
                               atol=ATOL, rtol=0)  # fmt: skip
    logits, classes = decode_binary_predictions(replies[1].body, len(second), 10)
    expected = reference(scripted, second)
    np.testing.assert_allclose(logits, expected, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(classes, expected.argmax(axis=1))
    assert replies[2].json()["reason"] == "wrong_length"
    # Both good requests shared the forward pass, and both replies say so.
    assert replies[0].headers[BATCH_HEADER] == replies[1].headers[BATCH_HEADER] == "2"
    assert replies[1].headers[DEVICE_HEADER] == "cpu"
