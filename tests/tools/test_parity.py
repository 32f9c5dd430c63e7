"""The headline test: every path to the model agrees on the whole held-out split."""

from __future__ import annotations

import pytest

from services.registry import all_stacks
from tools.parity import PARITY_ATOL, check_parity, format_table

pytestmark = pytest.mark.integration


def test_every_in_process_and_served_path_agrees(artifacts):
    rows = check_parity(artifacts, with_servers=True)
    table = format_table(rows)
    paths = {row.path for row in rows}
    # Every protocol of every registered stack this machine can run (flask_tf included).
    served = {f"{stack.name}/{protocol} (server)" for stack in all_stacks()
              if stack.available()[0] for protocol in stack.protocols}  # fmt: skip
    assert {"flask_torch/rest (server)", "flask_tf/rest (server)",
            "torchserve/rest (server)"} <= served
    assert {"Keras subclass (in-process)", "SavedModel serving_default (in-process)",
            "TorchScript (in-process)", *served} <= paths, table  # fmt: skip
    for row in rows:
        assert row.max_abs_diff <= PARITY_ATOL and row.classes_identical, table
        assert row.accuracy >= 0.97, table
    assert "FAIL" not in table


def test_a_wrong_path_would_fail(artifacts):
    """The check itself can fail: a perturbed logit is outside the tolerance."""
    from tools.parity import ParityRow

    assert not ParityRow("x", 2 * PARITY_ATOL, True, 1.0).passed
    assert not ParityRow("x", 0.0, False, 1.0).passed
