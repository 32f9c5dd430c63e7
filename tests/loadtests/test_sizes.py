"""The model-size sweep: its arithmetic (pure), its report, and one heavier variant served
at its own size by the real torch stacks (structure and parity, never a timing)."""

from __future__ import annotations

import pytest

from loadtests import sizes
from loadtests.sizes import Variant, overhead_share
from loadtests.wrk import wrk_available
from services.process import usable_cores

# Side 16 with few channels and one epoch: a different input shape than the default's,
# trained in seconds. Timings of it mean nothing; shapes and parity do.
TINY = Variant("tiny16", 16, (4, 8), 1)


def test_overhead_share_is_the_part_of_the_served_p50_that_is_not_the_model() -> None:
    assert overhead_share(0.5, 0.05) == pytest.approx(0.9)
    assert overhead_share(10.0, 9.0) == pytest.approx(0.1)
    assert overhead_share(None, 0.05) is None and overhead_share(0.5, None) is None


def test_the_variants_span_the_default_to_several_times_its_cost() -> None:
    specs = [v.spec for v in sizes.VARIANTS]
    assert sizes.VARIANTS[0].spec == type(specs[0])()  # the default model comes first
    macs = [s.side ** 2 * s.channels[0] * s.channels[1] for s in specs]
    assert macs == sorted(macs) and macs[-1] >= 1000 * macs[0]


def test_the_markdown_has_a_row_per_variant_and_stack_and_flags_failed_parity() -> None:
    variants = [{"name": "default", "side": 8, "channels": [16, 32], "epochs": 60,
                 "accuracy": 0.99, "in_process_ms": {"TorchScript": 0.035,
                                                     "SavedModel signature": 0.11}}]  # fmt: skip
    good = {"variant": "default", "stack": "flask_torch", "skipped": None,
            "in_process_ms": 0.035, "served_p50_ms": 0.5, "overhead_share": 0.93,
            "capacity_rps": 1800.0, "capacity_connections": 4,
            "parity_max_abs_diff": 1e-6, "parity_ok": True}  # fmt: skip
    bad = {**good, "stack": "torchserve", "parity_max_abs_diff": 0.2, "parity_ok": False,
           "capacity_rps": None}
    gone = {"variant": "default", "stack": "tf_serving", "skipped": "no binary"}
    md = "\n".join(sizes.markdown([good, bad, gone], variants))
    assert "| default | 8 | 16/32 | 60 | 0.9900 | 0.035 | 0.110 |" in md
    assert "| default | flask_torch | 0.035 | 0.500 | 93% | 1800 (4) | 1.0e-06 |" in md
    assert "| default | torchserve |" in md and "2.0e-01 **FAILS**" in md
    assert "none meets the objective" in md
    assert "- tf_serving: **not run**: no binary" in md and "| default | tf_serving |" not in md


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    paths, metrics = sizes.build_variant(TINY, tmp_path_factory.mktemp("sizes"))
    return paths, sizes.in_process_p50_ms(paths, usable_cores()[:1]), sizes.eager_logits(paths)


@pytest.mark.integration
@pytest.mark.parametrize("name", ["flask_torch", "torchserve"])
def test_a_heavier_variant_is_served_at_its_own_size(name: str, tiny, tmp_path) -> None:
    ok, why = wrk_available()
    if not ok:
        pytest.skip(why)
    paths, in_process, reference = tiny
    assert paths.spec.side == 16 and reference.shape[1] == paths.spec.num_classes
    # Both floor paths timed at the variant's own size (a child given its spec).
    assert set(in_process) == set(sizes.IN_PROCESS_PATHS) and min(in_process.values()) > 0
    cores = (usable_cores()[:1], usable_cores()[-1:])
    record = sizes.measure_stack(name, TINY, paths, in_process, reference, cores, 1, 1,
                                 tmp_path)  # fmt: skip
    if record["skipped"]:
        pytest.skip(record["skipped"])
    assert record["spec"]["side"] == 16
    assert record["parity_ok"], record["parity_max_abs_diff"]
    assert [lv["connections"] for lv in record["levels"]] == list(sizes.CONNECTIONS)
    assert all(lv["errors"] == 0 and lv["rps"] > 0 for lv in record["levels"])
    assert record["in_process_ms"] == in_process[record["floor_path"]]
    assert record["served_p50_ms"] == record["levels"][0]["p50_ms"]
    # The configuration as the running server reports it.
    expected = {"flask_torch": {"worker_class": "gevent", "workers": 1},
                "torchserve": {"workers": 1}}[name]  # fmt: skip
    assert expected.items() <= record["config_read_back"].items(), record["config_read_back"]
