"""What `make gpu-bench` needs on the lent GPU machine that its image lacks, as files to
carry there (`make device-bundle`).

  python -m tools.device_bundle [--python-version 3.12] [--out .device]

The lent GPU machine (README, "A GPU reference run") has Python 3.12 with a CUDA torch,
numpy, matplotlib, psutil, requests, but no Flask, gunicorn, Locust or Java, and no
network. This writes, under --out (gitignored):

  wheels/        the pinned wheels (requirements.lock) of Flask, gunicorn, Locust, orjson,
                 torch-model-archiver and what they need, for that Python, less the
                 packages the image has (DEVICE_HAS);
  torchserve/    TorchServe's wheel, apart: 42 MB, nearly all of it its Java frontend;
  jre.tar.xz     a Java 17 runtime (jlink) cut to the modules TorchServe's frontend loads;
  artifacts/     the built model files and answer key (built here: the image has no
                 TensorFlow, which building them needs);
  manifest.json  sizes, and which device call carries which part.

A device call carries at most CARRY_LIMIT with the working tree. TorchServe's wheel and
the runtime do not fit one call together, so the runtime goes in a call of its own that
unpacks it where the next call finds it (build/, kept while the machine stays warm);
scripts/device_gpu_bench.sh does either step. Ray Serve is not bundled: ray's wheel alone
is over the limit, so gpu-bench there skips it and says so.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
OUT = ROOT / ".device"
# Per device call, working tree included (the device tool's limit).
CARRY_LIMIT = 64 * 2**20
# What the torch stacks' gpu-bench runs need beyond the image (and their dependencies).
PACKAGES = ("flask", "gunicorn", "locust", "orjson", "torch-model-archiver", "PyYAML")
TORCHSERVE = "torchserve"
# In the device image (its package list, /work/.library/env and the device README):
# never carried. Only packages whose APIs these pins do not outgrow; Flask's own
# dependencies (werkzeug, jinja2, click, ...) are carried at their pins although the
# image has them, since Flask 3.1 needs recent ones.
DEVICE_HAS = frozenset({
    "numpy", "pillow", "psutil", "requests", "urllib3", "idna", "certifi",
    "charset-normalizer", "packaging", "pygments", "pytest", "pluggy", "iniconfig",
    "msgpack", "typing-extensions", "pyyaml", "setuptools", "wheel", "protobuf", "grpcio",
    "matplotlib", "prometheus-client", "nvidia-ml-py", "torch",
})  # fmt: skip
# The Java modules TorchServe 0.12's frontend needs: java.desktop for java.beans (log4j
# fails at start without it), java.sql, java.naming and java.management for its
# libraries, jdk.unsupported for netty, jdk.crypto.ec for TLS. Checked by starting
# TorchServe on the cut runtime (tests/tools/test_device_bundle.py).
JAVA_MODULES = ("java.base", "java.desktop", "java.logging", "java.management", "java.naming",
                "java.net.http", "java.scripting", "java.sql", "java.xml", "jdk.crypto.ec",
                "jdk.management", "jdk.unsupported", "jdk.zipfs")  # fmt: skip
PLATFORMS = ("manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_26_x86_64", "manylinux_2_27_x86_64", "manylinux_2_28_x86_64",
             "manylinux1_x86_64", "manylinux_2_5_x86_64", "manylinux2010_x86_64",
             "manylinux_2_12_x86_64")  # fmt: skip


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_project(path: Path) -> str:
    """The normalized project name of a wheel file (PEP 427: name-version-...)."""
    return normalize(path.name.split("-", 1)[0])


def download(packages: tuple[str, ...], dest: Path, python_version: str,
             deps: bool = True) -> None:
    """pip download of `packages` at the lock's pins, binary only, for `python_version`
    on x86-64 Linux (the device's), with or without their dependencies."""
    dest.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
               "--python-version", python_version, "--implementation", "cp",
               *[arg for p in PLATFORMS for arg in ("--platform", p)],
               "--platform", "any", "-c", str(LOCK), "-d", str(dest),
               *([] if deps else ["--no-deps"]), *packages]  # fmt: skip
    subprocess.run(command, check=True)


def prune(folder: Path, keep_out: frozenset[str]) -> list[str]:
    """Deletes the wheels of projects in `keep_out`; returns their names."""
    removed = []
    for wheel in sorted(folder.glob("*.whl")):
        if wheel_project(wheel) in keep_out:
            wheel.unlink()
            removed.append(wheel.name)
    return removed


def java_home() -> Path:
    """The JDK whose jlink and jmods build the runtime (JAVA_HOME, else jlink on PATH).

    Raises:
        RuntimeError: no JDK 17 with jmods (a JRE alone cannot jlink).
    """
    jlink = shutil.which("jlink")
    if jlink is None:
        raise RuntimeError("no jlink: install a JDK 17 (apt-get install openjdk-17-jdk-headless)")
    home = Path(jlink).resolve().parent.parent
    if not (home / "jmods").is_dir():
        raise RuntimeError(f"{home} has no jmods/: jlink needs a full JDK 17")
    return home


def build_jre(dest: Path, modules: tuple[str, ...] = JAVA_MODULES) -> Path:
    """A Java runtime of `modules` at `dest` (jlink, no debug data, symbols stripped)."""
    if dest.exists():
        shutil.rmtree(dest)
    home = java_home()
    subprocess.run([str(home / "bin" / "jlink"), "--add-modules", ",".join(modules),
                    "--strip-debug", "--no-man-pages", "--no-header-files", "--compress=2",
                    "--output", str(dest)], check=True)  # fmt: skip
    strip = shutil.which("strip")
    if strip:
        for library in dest.glob("lib/**/*.so"):
            subprocess.run([strip, "--strip-unneeded", str(library)], check=False)
    return dest


def pack(folder: Path, archive: Path) -> Path:
    """`folder` as a .tar.xz whose top entry is `jre/`."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:xz") as tar:
        tar.add(folder, arcname="jre")
    return archive


def copy_artifacts(source: Path, dest: Path) -> None:
    """The built artifacts folder whole (under a MiB): complete, so nothing is rebuilt
    there (harness.artifacts would need TensorFlow for the SavedModel)."""
    if dest.exists():
        shutil.rmtree(dest)
    if not (source / "reference_predictions.json").exists():
        raise RuntimeError(f"{source} holds no built artifacts: run `make artifacts` first")
    shutil.copytree(source, dest)


def size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def tree_size(root: Path = ROOT) -> int:
    """What a device call sends besides `carry`: tracked and untracked-not-ignored files."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root,
                            capture_output=True, check=True).stdout.split(b"\0")  # fmt: skip
    return sum((root / n.decode()).stat().st_size for n in listed
               if n and (root / n.decode()).is_file())  # fmt: skip


def carry_plan(out: Path, tree: int) -> list[dict]:
    """Device calls and what each carries, with their size against CARRY_LIMIT."""
    rel = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    base = [f"{rel}/wheels", f"{rel}/artifacts"]
    calls = [
        {"call": "flask_torch", "carry": base,
         "command": "bash scripts/device_gpu_bench.sh flask_torch"},
        {"call": "torchserve, first: the Java runtime", "carry": [f"{rel}/jre.tar.xz"],
         "command": "bash scripts/device_gpu_bench.sh --unpack-jre"},
        {"call": "torchserve, then (machine still warm)",
         "carry": [*base, f"{rel}/torchserve"],
         "command": "bash scripts/device_gpu_bench.sh torchserve"},
    ]  # fmt: skip
    for call in calls:
        # An absolute `c` (an --out outside the tree) replaces ROOT in the join.
        total = tree + sum(size(ROOT / c) for c in call["carry"])
        call["bytes"] = total
        call["fits"] = total <= CARRY_LIMIT
    return calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--python-version", default="3.12", help="the device's Python")
    parser.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    parser.add_argument("--skip-jre", action="store_true", help="no Java runtime (no JDK here)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for part in ("wheels", TORCHSERVE):
        shutil.rmtree(out / part, ignore_errors=True)
    print(f"device-bundle: wheels for Python {args.python_version} into {out}", flush=True)
    download(PACKAGES, out / "wheels", args.python_version)
    pruned = prune(out / "wheels", DEVICE_HAS)
    download((TORCHSERVE,), out / TORCHSERVE, args.python_version, deps=False)
    if not args.skip_jre:
        print("device-bundle: Java runtime (jlink)", flush=True)
        jre = build_jre(out / "jre")
        pack(jre, out / "jre.tar.xz")
        shutil.rmtree(jre)
    copy_artifacts(args.artifacts, out / "artifacts")
    plan = carry_plan(out, tree_size())
    manifest = {
        "python_version": args.python_version,
        "wheels": sorted(p.name for p in (out / "wheels").glob("*.whl")),
        "left_to_the_image": pruned,
        "torchserve": sorted(p.name for p in (out / TORCHSERVE).glob("*.whl")),
        "jre_modules": [] if args.skip_jre else list(JAVA_MODULES),
        "artifacts": str(args.artifacts),
        "calls": plan,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for call in plan:
        verdict = "fits" if call["fits"] else "OVER the limit"
        print(f"device-bundle: {call['call']}: carry {' '.join(call['carry'])} "
              f"({call['bytes'] / 2**20:.1f} MiB with the tree, {verdict}); "
              f"run: {call['command']}", flush=True)
    return 0 if all(c["fits"] for c in plan) else 1


if __name__ == "__main__":
    sys.exit(main())
