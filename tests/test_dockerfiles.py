"""Every image copies the repository's Python its entry point imports.

No engine runs here, so no image is built in CI; this reads each Dockerfile's COPY lines
and follows the entry point's imports (ast, every import in the file, function-level
ones included) through the repository's own packages. A module the image would import
but does not copy fails the container at start, with nothing to show it before a deploy:
the Flask image lost services/guard.py that way when gunicorn.conf.py began importing it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"digitnet", "services", "harness", "loadtests", "reliability", "tools", "k8s"}

# Per image: the files its entry point runs (a gunicorn config is a file, not a module),
# those that reach the image inside an archive it copies, and the repository modules it
# may import but never on that image's path, with why (none so far).
IMAGES = {
    "services/flask_torch/Dockerfile": {
        "entry": ["services/flask_torch/gunicorn.conf.py", "services/flask_torch/app.py"],
        "not_needed": {},
    },
    "services/ray_serve/Dockerfile": {
        "entry": ["services/ray_serve/server.py", "services/ray_serve/deployment.py"],
        "not_needed": {},
    },
    "services/torchserve/Dockerfile": {
        # The handler travels inside the .mar (build_mar.py), which the image copies; what
        # it imports must be in the image itself.
        "entry": ["services/torchserve/handler.py"],
        "in_archive": ["services/torchserve/handler.py"],
        "not_needed": {},
    },
    "loadtests/Dockerfile": {
        # The Job's entry point, the workers' (k8s/base/loadgen-workers.yaml), the users.
        "entry": ["loadtests/cluster.py", "loadtests/worker.py", "loadtests/locustfile.py"],
        "not_needed": {},
    },
}


def copied_sources(dockerfile: Path) -> list[str]:
    """The repository paths a Dockerfile's COPY lines take from the build context (not
    from another stage)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    sources: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0] != "COPY" or any(w.startswith("--from") for w in words):
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        sources += [a.rstrip("/") for a in args[:-1]]
    return sources


def module_path(name: str) -> Path | None:
    """The repository file of module `name`, or None when it is not the repository's."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Every repository module `path` imports, and the packages above each."""
    names: set[str] = set()
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(p for p in [*parts, base] if p)
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
    found: set[str] = set()
    for name in names:
        parts = name.split(".")
        found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)
                  if module_path(".".join(parts[:i]))}
    return found


def closure(entry: list[Path], skip: set[str]) -> set[Path]:
    """The entry files and every repository file they import, transitively."""
    seen: set[Path] = set()
    todo = list(entry)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_modules(path):
            if any(name == s or name.startswith(s + ".") for s in skip):
                continue
            todo.append(module_path(name))
    return seen


def is_copied(path: Path, sources: list[str]) -> bool:
    rel = path.relative_to(ROOT).as_posix()
    return any(rel == s or rel.startswith(s + "/") for s in sources)


@pytest.mark.parametrize("dockerfile", sorted(IMAGES))
def test_an_image_copies_everything_its_entry_point_imports(dockerfile: str) -> None:
    image = IMAGES[dockerfile]
    sources = copied_sources(ROOT / dockerfile)
    needed = closure([ROOT / e for e in image["entry"]], set(image["not_needed"]))
    carried = {ROOT / p for p in image.get("in_archive", [])}
    missing = sorted(p.relative_to(ROOT).as_posix() for p in needed - carried
                     if not is_copied(p, sources))
    assert not missing, f"{dockerfile} does not COPY what its entry point imports: {missing}"


def test_every_service_image_is_checked() -> None:
    dockerfiles = {p.relative_to(ROOT).as_posix() for p in ROOT.glob("*/**/Dockerfile")
                   if ".venv" not in p.parts and "model-image" not in p.parts}
    assert dockerfiles == set(IMAGES)


def test_a_missing_module_is_found(tmp_path: Path) -> None:
    """The check itself: the Flask image without services/guard.py fails it."""
    dockerfile = (ROOT / "services/flask_torch/Dockerfile").read_text()
    planted = tmp_path / "Dockerfile"
    planted.write_text(dockerfile.replace("services/guard.py ", ""))
    sources = copied_sources(planted)
    needed = closure([ROOT / "services/flask_torch/gunicorn.conf.py"], set())
    assert ROOT / "services/guard.py" in needed
    assert not is_copied(ROOT / "services/guard.py", sources)
