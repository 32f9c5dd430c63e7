"""`make parity`: every path to the model gives the same logits on the held-out digits.

In-process paths (Keras, torch eager, TorchScript, the SavedModel signature) and every
server this machine can run (started here on free loopback ports, stopped afterwards)
are compared with torch eager. Passing means max |logit difference| <= 1e-5 and the same
predicted class for every test image.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitnet.artifacts import DEFAULT_ARTIFACTS, ArtifactPaths
from digitnet.spec import ServingLimits
from harness.artifacts import ensure_artifacts
from harness.lifecycle import running_stacks

PARITY_ATOL = 1e-5


@dataclass(frozen=True)
class ParityRow:
    path: str
    max_abs_diff: float
    classes_identical: bool
    accuracy: float
    note: str = ""

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= PARITY_ATOL and self.classes_identical


def in_process_paths(paths: ArtifactPaths) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Each in-process way to run the model, as images -> logits."""
    import tensorflow as tf
    import torch

    from digitnet.keras_net import DigitConvNetKeras
    from digitnet.port import port_torch_to_keras
    from digitnet.savedmodel import load_signature
    from digitnet.torch_net import DigitConvNet
    from digitnet.torchscript import load_torchscript

    eager = DigitConvNet(paths.spec)
    eager.load_state_dict(torch.load(paths.state_dict, weights_only=True))
    eager.eval()
    keras_model = DigitConvNetKeras(paths.spec)
    port_torch_to_keras(eager, keras_model)
    scripted = load_torchscript(paths.torchscript)
    signature = load_signature(paths.savedmodel)

    def torch_call(model):
        def run(images: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return model(torch.from_numpy(images)).numpy()

        return run

    return {
        "torch eager (in-process)": torch_call(eager),
        "TorchScript (in-process)": torch_call(scripted),
        "Keras subclass (in-process)": lambda images: np.asarray(keras_model(images)),
        "SavedModel serving_default (in-process)": lambda images: signature(
            images=tf.constant(images)
        )["logits"].numpy(),
    }


def batched(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray, size: int):
    return np.concatenate([predict(images[i : i + size]) for i in range(0, len(images), size)])


@contextmanager
def running_servers(paths: ArtifactPaths, run_root: Path) -> Iterator[list[tuple[str, object]]]:
    """Starts every available stack on free ports; yields (label, client) pairs."""
    with running_stacks(paths, run_root) as (running, skipped):
        for name, reason in skipped.items():
            print(f"parity: {name} skipped: {reason}")
        yield [(f"{client.label} (server)", client) for r in running for client in r.clients]


def check_parity(paths: ArtifactPaths, with_servers: bool = True) -> list[ParityRow]:
    from digitnet.data import load_split

    split = load_split(paths.spec)
    images, labels = split.test_images, split.test_labels
    batch = ServingLimits.from_env().max_batch
    outputs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for label, predict in in_process_paths(paths).items():
        logits = batched(predict, images, batch)
        outputs[label] = (logits, logits.argmax(axis=1))
    if with_servers:
        with tempfile.TemporaryDirectory(prefix="parity-") as run_root:
            with running_servers(paths, Path(run_root)) as clients:
                for label, client in clients:
                    parts = [
                        client.predict(images[i : i + batch])
                        for i in range(0, len(images), batch)
                    ]
                    outputs[label] = (
                        np.concatenate([p[0] for p in parts]),
                        np.concatenate([p[1] for p in parts]),
                    )
    reference_logits, reference_classes = outputs["torch eager (in-process)"]
    return [
        ParityRow(
            path=label,
            max_abs_diff=float(np.abs(logits - reference_logits).max()),
            classes_identical=bool(np.array_equal(classes, reference_classes)),
            accuracy=float((classes == labels).mean()),
        )
        for label, (logits, classes) in outputs.items()
    ]


def format_table(rows: list[ParityRow]) -> str:
    lines = [
        "| path | max abs diff vs torch eager | same classes | test accuracy | pass |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row.path} | {row.max_abs_diff:.2e} | {'yes' if row.classes_identical else 'NO'}"
            f" | {row.accuracy:.4f} | {'ok' if row.passed else 'FAIL'} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, default=DEFAULT_ARTIFACTS)
    parser.add_argument("--in-process-only", action="store_true")
    args = parser.parse_args()
    paths = ensure_artifacts(args.artifacts)
    rows = check_parity(paths, with_servers=not args.in_process_only)

    print(f"parity on the 450 held-out digits (25% split), tolerance {PARITY_ATOL:g}")
    print(format_table(rows))
    failed = [row.path for row in rows if not row.passed]
    if failed:
        print(f"parity: FAILED for {', '.join(failed)}")
        return 1
    print(f"parity: all {len(rows)} paths agree")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
