"""Adding a stack is its folder and one registry line: a throwaway stack registered here
(tests/harness/throwaway_stack.py, through services.registry alone) is found by the load
runner, the robustness matrix, faults, soak, the report and the k8s validation, without
an edit anywhere else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import paths as result_paths
from services import registry
from tests.harness.throwaway_stack import WHY


@pytest.fixture
def throwaway(monkeypatch, tmp_path: Path):
    monkeypatch.setitem(registry.STACK_MODULES, "throwaway", "tests.harness.throwaway_stack")
    monkeypatch.setattr(result_paths, "RESULTS_ROOT", tmp_path / "results")
    return registry.load_stack("throwaway")


def test_the_registry_lists_it(throwaway) -> None:
    assert "throwaway" in registry.stack_names()
    assert registry.parse_stacks("throwaway,flask_torch") == ["throwaway", "flask_torch"]
    with pytest.raises(ValueError, match="unknown stacks"):
        registry.parse_stacks("nonesuch")


def test_the_load_runner_plans_it_and_says_why_it_is_skipped(throwaway) -> None:
    from loadtests import runner

    plan = runner.plan_runs([throwaway, registry.load_stack("flask_torch")], ["cpu", "cuda"])
    reasons = {(stack.name, device): reason for stack, device, reason in plan}
    assert reasons[("throwaway", "cpu")] == WHY
    assert reasons[("flask_torch", "cpu")] is None
    target = runner.target_for(throwaway, _rest_client(throwaway))
    assert target.user_class == "RestPredictUser"


def _rest_client(stack):
    from digitnet.clients import RestClient
    from digitnet.spec import ModelSpec

    return RestClient(f"{stack.name}/rest", "http://127.0.0.1:9", "/predict", ModelSpec())


@pytest.mark.parametrize("command", ["matrix", "faults", "soak"])
def test_reliability_runs_report_it_as_skipped(throwaway, artifacts, command, tmp_path) -> None:
    from reliability import __main__ as reliability_main
    from reliability.settings import SoakSettings

    run = tmp_path / "run"
    run.mkdir()
    if command == "matrix":
        code = reliability_main.run_matrix(artifacts, ["throwaway"], run)
        data = json.loads((run / "reliability" / "matrix.json").read_text())
        assert {cell["target"] for cell in data["cells"]} == {"throwaway/rest"}
    elif command == "faults":
        code = reliability_main.run_faults(artifacts, ["throwaway"], ["kill", "sigterm"], run)
        data = json.loads((run / "reliability" / "faults.json").read_text())
    else:
        code = reliability_main.run_soak(artifacts, ["throwaway"], SoakSettings(), run)
        data = json.loads((run / "reliability" / "soak.json").read_text())
    assert code == 0
    assert data["skipped"] == {"throwaway": WHY}


def test_the_report_files_it_by_its_declarations(throwaway, tmp_path) -> None:
    from loadtests.report import write_report
    from tests.loadtests.test_report import point

    points = [point("throwaway", "closed", users, rps, 5) for users, rps in ((1, 100), (4, 300))]
    points += [point("flask_torch", "closed", users, rps, 5) for users, rps in ((1, 90), (4, 200))]
    (tmp_path / "points.jsonl").write_text("\n".join(json.dumps(p) for p in points) + "\n")
    (tmp_path / "environment.json").write_text(json.dumps({"profile": "quick"}))
    (tmp_path / "baselines.json").write_text(json.dumps(
        [{"path": "TorchScript", "batch_size": 1, "p50_us": 40.0, "p99_us": 50.0}]))
    report = write_report(tmp_path).read_text()
    summary = json.loads((tmp_path / "summary.json").read_text())
    (head,) = [h for h in summary["headline"] if h["target"] == "throwaway/rest/cpu"]
    assert head["floor_path"] == "TorchScript" and head["floor_p50_us"] == 40.0
    # The framework x server table files it under what its plugin declares.
    assert "| framework | Flask + gunicorn | throwaway server |" in report
    assert "throwaway: 1.67 ms" in report


def test_the_k8s_validation_looks_for_its_deployment(throwaway) -> None:
    from k8s import validate

    problems = validate.stack_problems([{"kind": "Deployment",
                                         "metadata": {"name": "flask-torch"}}])
    assert any("throwaway: declares k8s Deployment 'throwaway'" in p for p in problems)
