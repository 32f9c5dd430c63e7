"""Every row of the shared bad-input matrix on every running stack, the gRPC rows through
the TF Serving protocol double (plumbing only: never reported as TF Serving), and the
verdict rules and table on their own."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from digitnet.artifacts import ArtifactPaths
from digitnet.clients import TfServingGrpcClient
from harness.lifecycle import RunningStack
from harness.payload import PayloadSet, check_prediction
from reliability.matrix import BAD_REQUESTS, GRPC_CASES, BadRequest, GrpcCase
from reliability.report import matrix_markdown
from reliability.robustness import (
    FAIL,
    PASS,
    RECORDED,
    SKIPPED,
    Cell,
    codec_skip,
    judge_rest,
    probe_grpc,
    probe_rest,
    run_matrix,
    skipped_cells,
    to_json,
)
from reliability.settings import MatrixSettings
from services.process import free_port
from tests.doubles.tf_serving_protocol_double import TfServingProtocolDouble

SETTINGS = MatrixSettings(health_timeout_s=30.0, request_timeout_s=30.0)
# The double runs the SavedModel without TF Serving's batching, so it has no batch limit.
DOUBLE_HAS_NO_BATCHING = {"batch_over_max_tensor"}


@pytest.mark.integration
@pytest.mark.parametrize("case", BAD_REQUESTS, ids=lambda case: case.name)
def test_bad_request_gets_its_named_4xx_and_the_stack_keeps_answering(
    running: RunningStack, case: BadRequest
) -> None:
    why = codec_skip(running.stack, case)
    if why is not None:
        pytest.skip(why)
    cell = probe_rest(running, case, SETTINGS)

    assert cell.verdict == PASS, cell
    assert cell.status == str(case.status)
    assert cell.healthy_after and cell.correct_after
    assert not cell.leaks_internals
    if case.name not in running.stack.front_answers:
        assert cell.json_error and cell.reason == case.reason, cell


@dataclass
class DoubleAsStack:
    """Presents the protocol double the way probe_grpc reads a RunningStack. Its name
    says what it is, so a cell from it can never pass for TF Serving."""

    paths: ArtifactPaths
    grpc: TfServingGrpcClient
    name: str = "tf_serving_protocol_double"

    def ready(self, timeout_s: float) -> bool:
        return True  # in-process double: it is up while its context is open

    def payloads(self) -> PayloadSet:
        return PayloadSet(self.paths.spec, 1, self.paths.reference_predictions)

    def answers_correctly(self, client, payloads: PayloadSet) -> str | None:
        return check_prediction(client, payloads)


@pytest.fixture(scope="module")
def double(artifacts: ArtifactPaths) -> Iterator[DoubleAsStack]:
    with TfServingProtocolDouble(artifacts.savedmodel, artifacts.spec.name,
                                 artifacts.spec.version, free_port(), free_port()) as server:
        client = TfServingGrpcClient(server.grpc_target, artifacts.spec)
        try:
            yield DoubleAsStack(artifacts, client)
        finally:
            client.close()


@pytest.mark.integration
@pytest.mark.parametrize("case", GRPC_CASES, ids=lambda case: case.name)
def test_grpc_case_reaches_the_protocol_double_and_it_keeps_answering(
    double: DoubleAsStack, case: GrpcCase
) -> None:
    cell = probe_grpc(double, case, SETTINGS)  # type: ignore[arg-type]

    assert cell.target == "tf_serving_protocol_double/grpc"
    assert cell.verdict == RECORDED, cell
    assert cell.correct_after
    if case.expected_code and case.name not in DOUBLE_HAS_NO_BATCHING:
        assert cell.status == case.expected_code, cell


GOOD_DOC = {"error": "batch of 65 instances exceeds the maximum of 64",
            "reason": "batch_too_large"}  # fmt: skip
BATCH_CASE = next(c for c in BAD_REQUESTS if c.name == "batch_over_max")
BODY_CASE = next(c for c in BAD_REQUESTS if c.name == "body_over_max")


@pytest.mark.parametrize(
    ("stack", "case", "status", "document", "leaks", "healthy", "verdict"),
    [
        ("flask_torch", BATCH_CASE, 413, GOOD_DOC, False, True, PASS),
        ("flask_torch", BATCH_CASE, 500, GOOD_DOC, False, True, FAIL),
        ("flask_torch", BATCH_CASE, 413, {**GOOD_DOC, "reason": "x"}, False, True, FAIL),
        ("flask_torch", BATCH_CASE, 413, {**GOOD_DOC, "error": "bad"}, False, True, FAIL),
        ("flask_torch", BATCH_CASE, 413, GOOD_DOC, True, True, FAIL),
        ("flask_torch", BATCH_CASE, 413, GOOD_DOC, False, False, FAIL),
        ("flask_torch", BODY_CASE, 413, None, False, True, FAIL),
        ("torchserve", BODY_CASE, 413, None, False, True, PASS),
        ("tf_serving", BATCH_CASE, 200, None, False, True, RECORDED),
        ("tf_serving", BATCH_CASE, 200, None, False, False, FAIL),
    ],
    ids=["named-4xx", "wrong-status", "wrong-reason", "unnamed", "traceback", "unhealthy",
         "no-json", "documented-front-answer", "tf-serving-recorded", "tf-serving-down"],
)
def test_verdict_rules(stack, case, status, document, leaks, healthy, verdict) -> None:
    assert judge_rest(stack, case, status, document, leaks, healthy, True)[0] == verdict


def test_table_has_every_case_and_says_why_a_stack_was_skipped() -> None:
    cells = skipped_cells("tf_serving", ["rest", "grpc"], "no tensorflow_model_server")
    markdown = "\n".join(matrix_markdown(to_json(cells, {"tf_serving": "no binary here"})))

    for case in [*BAD_REQUESTS, *GRPC_CASES]:
        assert f"| {case.name} |" in markdown
    assert "| case | what | expected | tf_serving/rest | tf_serving/grpc |" in markdown
    assert "**tf_serving skipped**: no binary here" in markdown


BINARY_CASES = [c for c in BAD_REQUESTS if c.codec == "binary"]


def test_binary_cases_cover_every_refusal_of_the_binary_codec() -> None:
    assert {c.reason for c in BINARY_CASES} >= {
        "truncated", "wrong_magic", "wrong_dtype", "wrong_shape", "wrong_length",
        "non_finite", "out_of_range", "batch_too_large"}  # fmt: skip
    assert all(c.content_type == "application/vnd.digitnet.tensor" for c in BINARY_CASES)


@dataclass
class RunningDouble:
    """Just enough of a RunningStack for run_matrix to decide what it sends."""

    stack: object
    name: str = "tf_serving"
    rest: object = None
    grpc: object = None


def test_stacks_without_the_binary_codec_get_its_cases_as_skipped_with_the_reason(
    monkeypatch,
) -> None:
    from services.registry import load_stack

    tf_serving = load_stack("tf_serving")
    sent = []

    def probe(running, case: BadRequest, settings) -> Cell:
        sent.append(case.name)
        return Cell(target="tf_serving/rest", case=case.name, verdict=RECORDED, status="400")

    monkeypatch.setattr("reliability.robustness.probe_rest", probe)
    cells = run_matrix(RunningDouble(tf_serving, rest=object()), SETTINGS)  # type: ignore[arg-type]

    skipped = {c.case: c for c in cells if c.verdict == SKIPPED}
    assert set(skipped) == {c.name for c in BINARY_CASES}
    assert set(sent) == {c.name for c in BAD_REQUESTS} - set(skipped)
    assert all("does not speak the binary body codec" in c.note for c in skipped.values())
    markdown = "\n".join(matrix_markdown(to_json(cells, {})))
    assert "tf_serving/rest: tf_serving does not speak the binary body codec" in markdown
    for name in ("torchserve", "flask_torch", "flask_tf", "ray_serve"):
        assert all(codec_skip(name, case) is None for case in BINARY_CASES), name


def test_case_names_are_unique() -> None:
    names = [case.name for case in [*BAD_REQUESTS, *GRPC_CASES]]
    assert len(names) == len(set(names))
