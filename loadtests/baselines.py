"""In-process inference timings: the floor every server's latency is compared against.

Per batch size: torch eager, TorchScript, Keras eager call, `tf.function`, the
SavedModel `serving_default` signature, and the TF1-style static graph run by a
`tf.compat.v1.Session`. One intra-op thread each, pinned to the cores given, so the
floor is measured under the same limits as a one-core server.

  python -m loadtests.baselines --artifacts artifacts --cores 0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from digitnet.artifacts import DEFAULT_ARTIFACTS, ArtifactPaths
from digitnet.data import load_split
from digitnet.spec import CLASSES_KEY, INPUT_KEY, LOGITS_KEY, SIGNATURE_NAME, ModelSpec

WARMUP_CALLS = 20


def time_calls(run: Callable[[], object], iterations: int) -> dict:
    """Per-call latency percentiles in microseconds, after warm-up."""
    for _ in range(WARMUP_CALLS):
        run()
    samples = np.empty(iterations)
    for i in range(iterations):
        started = time.perf_counter_ns()
        run()
        samples[i] = (time.perf_counter_ns() - started) / 1000.0
    return {
        "p50_us": float(np.percentile(samples, 50)),
        "p99_us": float(np.percentile(samples, 99)),
        "mean_us": float(samples.mean()),
        "iterations": iterations,
    }


def torch_runners(paths: ArtifactPaths) -> dict[str, Callable[[np.ndarray], Callable]]:
    import torch

    from digitnet.torch_net import DigitConvNet
    from digitnet.torchscript import load_torchscript

    torch.set_num_threads(1)
    eager = DigitConvNet(paths.spec)
    eager.load_state_dict(torch.load(paths.state_dict, weights_only=True))
    eager.eval()
    scripted = load_torchscript(paths.torchscript)

    def runner(model):
        def bind(images: np.ndarray) -> Callable:
            tensor = torch.from_numpy(images)

            def run():
                with torch.inference_mode():
                    return model(tensor)

            return run

        return bind

    return {"torch eager": runner(eager), "TorchScript": runner(scripted)}


def tf_runners(paths: ArtifactPaths) -> dict[str, Callable[[np.ndarray], Callable]]:
    import tensorflow as tf
    import torch

    from digitnet.keras_net import DigitConvNetKeras
    from digitnet.port import port_torch_to_keras
    from digitnet.torch_net import DigitConvNet

    eager_torch = DigitConvNet(paths.spec)
    eager_torch.load_state_dict(torch.load(paths.state_dict, weights_only=True))
    keras_model = DigitConvNetKeras(paths.spec)
    port_torch_to_keras(eager_torch, keras_model)
    graph_fn = tf.function(lambda x: keras_model(x, training=False), reduce_retracing=True)
    signature = tf.saved_model.load(str(paths.savedmodel)).signatures[SIGNATURE_NAME]

    def keras_eager(images):
        tensor = tf.constant(images)
        return lambda: keras_model(tensor, training=False)

    def tf_function(images):
        tensor = tf.constant(images)
        return lambda: graph_fn(tensor)

    def saved_signature(images):
        tensor = tf.constant(images)
        return lambda: signature(**{INPUT_KEY: tensor})

    return {
        "Keras eager call": keras_eager,
        "tf.function": tf_function,
        "SavedModel signature": saved_signature,
        "tf.compat.v1 Session (static graph)": v1_session_runner(paths),
    }


def v1_session_runner(paths: ArtifactPaths) -> Callable[[np.ndarray], Callable]:
    """The SavedModel loaded into a TF1 Graph and run with Session.run, the classic
    "static graph for deployment" path (what TF Serving itself executes)."""
    import tensorflow as tf

    graph = tf.Graph()
    config = tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=1, inter_op_parallelism_threads=1
    )
    session = tf.compat.v1.Session(graph=graph, config=config)
    with graph.as_default():
        meta = tf.compat.v1.saved_model.loader.load(
            session, ["serve"], str(paths.savedmodel)
        )
    signature = meta.signature_def[SIGNATURE_NAME]
    feed_name = signature.inputs[INPUT_KEY].name
    fetches = [signature.outputs[LOGITS_KEY].name, signature.outputs[CLASSES_KEY].name]

    def bind(images: np.ndarray) -> Callable:
        return lambda: session.run(fetches, feed_dict={feed_name: images})

    return bind


def measure(paths: ArtifactPaths, batches: tuple[int, ...], iterations: int) -> list[dict]:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    images = load_split(paths.spec).test_images
    runners = {**torch_runners(paths), **tf_runners(paths)}
    results = []
    for batch in batches:
        sample = np.ascontiguousarray(images[:batch])
        for name, bind in runners.items():
            stats = time_calls(bind(sample), iterations)
            results.append({"path": name, "batch_size": batch, **stats})
    return results


def command(artifacts: Path, batches: Sequence[int], iterations: int, cores: Sequence[int],
            out: Path) -> list[str]:  # fmt: skip
    """This module's command line, for a child pinned to `cores` before either framework
    starts (how the bench and the size sweep measure their floors); it writes `out`."""
    return [sys.executable, "-m", "loadtests.baselines", "--artifacts", str(artifacts),
            "--batches", ",".join(map(str, batches)), "--iterations", str(iterations),
            "--cores", ",".join(map(str, cores)), "--out", str(out)]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, default=DEFAULT_ARTIFACTS)
    parser.add_argument("--batches", default="1,8,64")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--cores", default="", help="comma-separated CPU ids to pin to")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.cores:
        os.sched_setaffinity(0, {int(c) for c in args.cores.split(",")})
    paths = ArtifactPaths(args.artifacts, ModelSpec.from_env())
    batches = tuple(int(b) for b in args.batches.split(","))
    results = measure(paths, batches, args.iterations)
    text = json.dumps(results, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    for row in results:
        print(f"b{row['batch_size']:<3} {row['path']:<38} p50 {row['p50_us']:9.1f} us"
              f"  p99 {row['p99_us']:9.1f} us")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
