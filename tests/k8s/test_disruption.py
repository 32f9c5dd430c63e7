"""No voluntary eviction of a benchmark pod: the rendered overlays carry the budgets and
the autoscaler annotation, and k8s/validate.py names each planted gap."""

from __future__ import annotations

from pathlib import Path

import pytest

from k8s import validate

SAFE = validate.SAFE_TO_EVICT


def benchmark_pods(objects: list[dict]) -> list[validate.PodTemplate]:
    return [p for p in validate.pod_templates(objects)
            if p.labels.get(validate.COMPONENT_LABEL) in validate.BENCHMARK_COMPONENTS]


@pytest.mark.parametrize("overlay", sorted(validate.OVERLAYS))
def test_every_benchmark_pod_is_annotated_and_budgeted(rendered, overlay):
    objects = rendered[overlay]
    pods = benchmark_pods(objects)
    assert {p.labels[validate.COMPONENT_LABEL] for p in pods} == {"server", "loadgen",
                                                                  "loadgen-worker"}
    assert all(p.annotations[SAFE] == "false" for p in pods)
    budgets = {o["metadata"]["name"]: o["spec"] for o in objects
               if o["kind"] == "PodDisruptionBudget"}  # fmt: skip
    assert budgets["servers"]["minAvailable"] == "100%"
    assert budgets["loadgen"]["minAvailable"] == 1
    assert budgets["loadgen-workers"]["maxUnavailable"] == 0
    assert validate.disruption_problems(objects) == []


def problems(k8s_copy: Path, overlay: str = "cpu") -> list[str]:
    _text, found = validate.validate_overlay(k8s_copy / "overlays" / overlay,
                                             validate.OVERLAYS[overlay])  # fmt: skip
    return found


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


def test_a_loadgen_without_the_annotation_is_named(k8s_copy):
    edit(k8s_copy / "base" / "loadgen.yaml",
         '            cluster-autoscaler.kubernetes.io/safe-to-evict: "false"\n',
         '            example.com/note: "x"\n')
    assert any(p.startswith("CronJob/loadgen: pod template lacks the annotation "
                            "cluster-autoscaler.kubernetes.io/safe-to-evict")
               for p in problems(k8s_copy)), problems(k8s_copy)  # fmt: skip


def test_servers_without_the_patch_are_named(k8s_copy):
    edit(k8s_copy / "base" / "benchmark-pods.yaml",
         'cluster-autoscaler.kubernetes.io/safe-to-evict: "false"', 'example.com/note: "x"')
    named = [p for p in problems(k8s_copy) if "lacks the annotation" in p]
    assert {p.split(":")[0] for p in named} >= {"Deployment/tf-serving", "Deployment/torchserve",
                                                "Deployment/flask-torch"}


def test_a_missing_budget_is_named(k8s_copy):
    edit(k8s_copy / "base" / "kustomization.yaml", "  - disruption-budgets.yaml\n", "")
    found = problems(k8s_copy)
    assert "CronJob/loadgen: no PodDisruptionBudget selects it (a drain or scale-down may " \
           "evict it mid-run)" in found
    assert any(p.startswith("Deployment/torchserve: no PodDisruptionBudget") for p in found)


@pytest.mark.parametrize(("old", "new", "expected"), [
    ('minAvailable: "100%"', 'minAvailable: "50%"', "keeps 2 of the"),
    ('minAvailable: "100%"', "maxUnavailable: 1", "maxUnavailable 1 allows evictions"),
    ("minAvailable: 1\n", 'minAvailable: "100%"\n', "a percentage minAvailable cannot be "
     "resolved for pods without a scale (CronJob/loadgen)"),
    ("minAvailable: 1\n", "minAvailable: 0\n", "minAvailable 0 keeps 0 of the 1 pods"),
])  # fmt: skip
def test_a_budget_that_allows_evictions_is_named(k8s_copy, old, new, expected):
    edit(k8s_copy / "base" / "disruption-budgets.yaml", old, new)
    found = problems(k8s_copy)
    assert any(expected in p for p in found), found


def test_a_pod_under_two_budgets_is_named(k8s_copy):
    path = k8s_copy / "base" / "disruption-budgets.yaml"
    path.write_text(path.read_text() + path.read_text().split("---\n")[1].replace(
        "name: loadgen", "name: loadgen-again").join(["---\n", ""]))
    assert any("CronJob/loadgen: selected by several PodDisruptionBudgets" in p
               for p in problems(k8s_copy))  # fmt: skip
