"""Model-size sweep: when does the server stop mattering? (`make sizes`, issue 11 part 4)

The default model costs ~35 us in-process, so every served figure of it is HTTP and JSON.
Here the same net is built at heavier sizes through the spec's own knobs (side, channels;
no code changes) and every available stack serves each size:

1. Per variant: artifacts (trained, exported, each stack's own build) under
   `<root>/<variant>`, fewer epochs for the heavy ones (timing needs weights, not accuracy;
   the accuracy reached is recorded), and the in-process batch-1 p50 of TorchScript and the
   SavedModel signature on the server cores (`python -m loadtests.baselines` in a pinned
   child, one thread: in_process_p50_ms).
2. Per stack: started on the server cores; parity of its replies against torch eager on
   the whole test split (max |diff| must stay within PARITY_ATOL); then wrk on the
   generator cores at 1, 4 and 16 connections (`runs` x `duration_s` each).
3. Per point: served p50 at one connection, the overhead share (served p50 - in-process
   p50) / served p50 against the stack's own floor path, and the closed-loop capacity
   under the objective: the most req/s of a level whose p99 meets it (wrk's figure, a
   closed loop, not `make bench`'s open-loop SLO search: a lower bound of it).

Written to sizes.jsonl, model_sizes.png and SIZES.md in the output folder.

    python -m loadtests.sizes --root artifacts-sizes --out results/sizes-<time> [--stacks ...]
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from digitnet.artifacts import ArtifactPaths
from digitnet.spec import ModelSpec, ServingLimits
from harness.artifacts import build_all, complete
from harness.lifecycle import START_ERRORS, did_not_start, skipped_reason, start_stack
from loadtests import splits
from loadtests.baselines import command as baseline_command
from loadtests.closed_wrk import (
    SLO_P99_MS,
    capacity_cell,
    capacity_under_objective,
    rest_request,
    wrk_levels,
)
from loadtests.runner import split_cores
from loadtests.splits import SplitFiles
from services.process import usable_cores
from services.registry import load_stack, stack_names
from services.stack import CPU

SIZES_FILE = "sizes.jsonl"
PLOT_FILE = "model_sizes.png"
MARKDOWN_FILE = "SIZES.md"
PARITY_ATOL = 1e-5
CONNECTIONS = (1, 4, 16)
BASELINE_ITERATIONS = 200
IN_PROCESS_PATHS = ("TorchScript", "SavedModel signature")


@dataclass(frozen=True)
class Variant:
    """One model size: the spec knobs and how long to train it."""

    name: str
    side: int
    channels: tuple[int, int]
    epochs: int

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec(side=self.side, channels=self.channels)


# Chosen so that the in-process batch-1 cost spans ~35 us to several ms on one core of the
# 2-core build machine (measured: see SIZES.md of a run). Epochs shrink with the cost: the
# large variant at 60 epochs would train for ~10 minutes and its timings would not change.
VARIANTS = (
    Variant("default", 8, (16, 32), 60),
    Variant("medium", 16, (32, 64), 15),
    Variant("large", 32, (64, 128), 4),
    Variant("xlarge", 32, (128, 256), 2),
)


def overhead_share(served_p50_ms: float | None, in_process_ms: float | None) -> float | None:
    """(served - in-process) / served: the part of a served request that is not the model;
    None without both figures."""
    if served_p50_ms is None or in_process_ms is None or served_p50_ms <= 0:
        return None
    return (served_p50_ms - in_process_ms) / served_p50_ms


def build_variant(variant: Variant, root: Path) -> tuple[ArtifactPaths, dict]:
    """The variant's artifacts (built unless complete) and its metrics.json."""
    from digitnet.train import TrainConfig

    paths = ArtifactPaths(root / variant.name, variant.spec)
    if not complete(paths):
        # Reached accuracy is recorded, not required: a 4-epoch net only has to be timed.
        build_all(paths.root, variant.spec, TrainConfig(epochs=variant.epochs),
                  min_accuracy=0.0)  # fmt: skip
    return paths, json.loads(paths.metrics.read_text())


def in_process_p50_ms(paths: ArtifactPaths, cores: Sequence[int]) -> dict[str, float]:
    """Batch-1 p50 (ms) of each IN_PROCESS_PATHS entry, measured as `make baselines` and
    the bench measure them: `python -m loadtests.baselines` in a child pinned to `cores`
    before either framework starts, one intra-op thread each. Not in this process: TF
    here runs with its default thread counts (they cannot be set once TF has started,
    and earlier work, a variant's training or the previous variant's figures, starts it)
    and with whatever state that work left. Measured: the reference run of 2026-12-06
    read the xlarge SavedModel at 3.5 ms in this process against flask_tf's served 7.9
    (a 55% "overhead" at every size); a pinned child reads 6.4-7.3 ms here (and the same
    in-process code, run again, 6.3: the state that made 3.5 was not reproduced)."""
    with tempfile.TemporaryDirectory(prefix="digitnet-sizes-") as tmp:
        out = Path(tmp) / "baselines.json"
        subprocess.run(baseline_command(paths.root, (1,), BASELINE_ITERATIONS, cores, out),
                       env={**os.environ, **paths.spec.env()}, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        rows = json.loads(out.read_text())
    p50s = {row["path"]: row["p50_us"] / 1000.0 for row in rows if row["batch_size"] == 1}
    return {name: p50s[name] for name in IN_PROCESS_PATHS}


def served_parity(client, paths: ArtifactPaths, reference: np.ndarray) -> float:
    """Max |logit difference| of the client's answers on the test split against torch
    eager's in-process logits."""
    from digitnet.data import load_split

    images = load_split(paths.spec).test_images
    batch = ServingLimits.from_env().max_batch
    logits = np.concatenate([client.predict(images[i : i + batch])[0]
                             for i in range(0, len(images), batch)])  # fmt: skip
    return float(np.abs(logits - reference).max())


def eager_logits(paths: ArtifactPaths) -> np.ndarray:
    import torch

    from digitnet.data import load_split
    from digitnet.torch_net import DigitConvNet

    model = DigitConvNet(paths.spec)
    model.load_state_dict(torch.load(paths.state_dict, weights_only=True))
    model.eval()
    with torch.inference_mode():
        return model(torch.from_numpy(load_split(paths.spec).test_images)).numpy()


def measure_stack(name: str, variant: Variant, paths: ArtifactPaths, in_process: dict,
                  reference: np.ndarray, cores: tuple[list[int], list[int]], runs: int,
                  duration_s: int, run_dir: Path) -> dict:  # fmt: skip
    """One stack at one model size: parity, wrk levels, and the derived figures."""
    stack = load_stack(name)
    head = {"variant": variant.name, "stack": name, "spec": asdict(variant.spec)}
    reason = skipped_reason(stack)
    if reason is not None:
        return {**head, "skipped": reason}
    server_cores, generator_cores = cores
    with ExitStack() as exits:
        try:
            running = start_stack(stack, paths, run_dir / f"{variant.name}-{name}", exits,
                                  cores=server_cores, env=stack.device_env(CPU))  # fmt: skip
        except START_ERRORS as err:
            return {**head, "skipped": did_not_start(err)}
        read_back = stack.serving_config(running.server)
        url = rest_request(running)[0]
        client = next(c for c in running.clients if getattr(c, "url", None) == url)
        parity = served_parity(client, paths, reference)
        levels = wrk_levels(running, CONNECTIONS, runs, duration_s, generator_cores, run_dir)
    floor = in_process.get(stack.floor_path)
    served = levels[0]["p50_ms"]
    capacity = capacity_under_objective(levels, SLO_P99_MS)
    return {
        **head, "skipped": None, "floor_path": stack.floor_path, "in_process_ms": floor,
        "served_p50_ms": served, "overhead_share": overhead_share(served, floor),
        "capacity_rps": None if capacity is None else capacity["rps"],
        "capacity_connections": None if capacity is None else capacity["connections"],
        "parity_max_abs_diff": parity, "parity_ok": parity <= PARITY_ATOL,
        "config_read_back": read_back, "levels": levels,
    }  # fmt: skip


# --- outputs --------------------------------------------------------------------------------


def markdown(records: Sequence[Mapping], variants: Sequence[Mapping]) -> list[str]:
    """SIZES.md: one table of variants, one row per (variant, stack)."""
    md = ["# Model-size sweep: when does the server stop mattering?", "",
          "| variant | side | channels | epochs | test accuracy | TorchScript b1 p50 ms "
          "| SavedModel signature b1 p50 ms |", "|" + " --- |" * 7]  # fmt: skip
    for v in variants:
        ms = v["in_process_ms"]
        md.append(f"| {v['name']} | {v['side']} | {v['channels'][0]}/{v['channels'][1]} "
                  f"| {v['epochs']} | {v['accuracy']:.4f} | {ms['TorchScript']:.3f} "
                  f"| {ms['SavedModel signature']:.3f} |")  # fmt: skip
    md += ["", "wrk at one connection for the served p50; overhead share = (served p50 − "
           "in-process p50 of the stack's floor path) / served p50; capacity: the most req/s "
           f"of the 1/4/16-connection closed-loop levels whose p99 ≤ {SLO_P99_MS:g} ms (a "
           "lower bound of the open-loop SLO capacity); parity: max |logit diff| of the "
           "stack's replies on the test split against torch eager.", "",
           f"![overhead share against model cost]({PLOT_FILE})", "",
           "| variant | stack | in-process ms | served p50 ms | overhead share | capacity req/s "
           "(connections) | parity max diff |", "|" + " --- |" * 7]  # fmt: skip
    skipped: dict[str, str] = {}
    for r in records:
        if r.get("skipped"):
            skipped.setdefault(r["stack"], r["skipped"])
            continue
        share = "–" if r["overhead_share"] is None else f"{r['overhead_share']:.0%}"
        cap = capacity_cell(r)
        parity = f"{r['parity_max_abs_diff']:.1e}" + ("" if r["parity_ok"] else " **FAILS**")
        md.append(f"| {r['variant']} | {r['stack']} | {r['in_process_ms']:.3f} "
                  f"| {r['served_p50_ms']:.3f} | {share} | {cap} | {parity} |")  # fmt: skip
    md += [f"- {name}: **not run**: {why}" for name, why in skipped.items()]
    return md


def plot(records: Sequence[Mapping], out: Path) -> Path:
    """Overhead share against in-process cost, one line per stack."""
    from loadtests.plots import _pyplot

    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(7, 4.5))
    for name in sorted({r["stack"] for r in records if not r.get("skipped")}):
        points = sorted((r["in_process_ms"], r["overhead_share"]) for r in records
                        if r["stack"] == name and not r.get("skipped")
                        and r["overhead_share"] is not None)  # fmt: skip
        if points:
            axis.plot([p[0] for p in points], [100 * p[1] for p in points], marker="o",
                      label=name)  # fmt: skip
    axis.set_xscale("log")
    axis.set_xlabel("in-process batch-1 p50 of the stack's floor path (ms, log)")
    axis.set_ylabel("overhead share of the served p50 (%)")
    axis.set_title("When does the server stop mattering? (wrk, 1 connection)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def run(root: Path, out: Path, stacks: Sequence[str], runs: int, duration_s: int,
        variants: Sequence[Variant] = VARIANTS) -> list[dict]:  # fmt: skip
    """The whole sweep; writes its files into `out` and returns the records."""
    files = SplitFiles(out, SIZES_FILE, MARKDOWN_FILE)
    cores = split_cores(usable_cores())
    print(f"sizes: servers on cores {cores[0]}, wrk on cores {cores[1]}", flush=True)
    records: list[dict] = []
    described: list[dict] = []
    started = time.monotonic()
    for variant in variants:
        paths, metrics = build_variant(variant, root)
        in_process = in_process_p50_ms(paths, cores[0])
        reference = eager_logits(paths)
        described.append({**asdict(variant), "accuracy": metrics["test_accuracy_torch"],
                          "in_process_ms": in_process})  # fmt: skip
        print(f"sizes: {variant.name}: TorchScript b1 {in_process['TorchScript']:.3f} ms, "
              f"accuracy {metrics['test_accuracy_torch']:.4f} "
              f"[{time.monotonic() - started:.0f} s]", flush=True)
        for name in stacks:
            record = measure_stack(name, variant, paths, in_process, reference, cores, runs,
                                   duration_s, out / "servers")  # fmt: skip
            records.append(record)
            files.append(record)
            print(f"sizes: {variant.name}/{name}: "
                  + (f"skipped ({record['skipped']})" if record["skipped"] else
                     f"served p50 {record['served_p50_ms']:.3f} ms, overhead "
                     f"{record['overhead_share']:.0%}, parity "
                     f"{record['parity_max_abs_diff']:.1e}")
                  + f" [{time.monotonic() - started:.0f} s]", flush=True)  # fmt: skip
    (out / "variants.json").write_text(json.dumps(described, indent=2) + "\n")
    files.write_markdown(markdown(records, described))
    plot(records, out / PLOT_FILE)
    return records


def main() -> None:
    parser = splits.arguments(__doc__.splitlines()[0], "sizes")
    parser.add_argument("--root", type=Path, default=Path("artifacts-sizes"))
    args, stacks = splits.parse(parser, "sizes", stack_names())
    run(args.root, args.out, stacks, args.runs, args.duration)
    print(f"sizes: wrote {args.out / MARKDOWN_FILE}", flush=True)


if __name__ == "__main__":
    main()
