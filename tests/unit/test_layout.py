"""The architecture a newcomer reads from `ls`, held by tests: module sizes, the
direction of imports, no import cycle, one module that builds the Anthropic client."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("analysis", "train", "tune", "actors", "studies")
MAX_LINES = 600

# What each package may import of ours (DESIGN.md: arrows only point down).
ALLOWED = {
    "analysis": set(),
    "train": {"analysis"},
    "tune": {"train", "analysis"},
    "actors": {"train", "analysis"},
    "studies": {"train", "tune", "analysis"},
}
# Inside actors/: subsystems talk through the tracker's client and the shared pieces.
SUBSYSTEM_MAY_IMPORT = {
    "actors.shared": {"actors.shared"},
    "actors.tracker": {"actors.tracker", "actors.shared"},
    "actors.scaler": {"actors.scaler", "actors.shared", "actors.tracker.client", "actors.tracker.actor",
                      "actors.tracker.rules", "actors.tracker.owners"},
    "actors.research": {"actors.research", "actors.shared", "actors.tracker.client", "actors.tracker.actor",
                        "actors.tracker.rules", "actors.tracker.owners"},
    # The report reads what the others write, through their public readers only.
    "actors.reporting": {"actors.reporting", "actors.shared", "actors.tracker.store", "actors.tracker.rules",
                         "actors.scaler.discovery", "actors.research.memory"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Modules of ours that `name` imports, anywhere in the file (deferred imports too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_pkg = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from pkg import submodule` imports the submodule
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod for a in node.names]
        else:
            continue
        for t in targets:
            if t.split(".")[0] in PACKAGES:
                while t and t not in MODULES:
                    t = t.rpartition(".")[0]
                if t and t != name:
                    found.add(t)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_over_600_lines(name):
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{MODULES[name].relative_to(ROOT)} has {lines} lines: split it by responsibility"


def test_imports_only_point_down_the_layers():
    wrong = []
    for name, deps in GRAPH.items():
        pkg = name.split(".")[0]
        for dep in deps:
            top = dep.split(".")[0]
            if top != pkg and top not in ALLOWED[pkg]:
                wrong.append(f"{name} imports {dep}")
    assert not wrong, "\n".join(sorted(wrong))


def test_actor_subsystems_use_only_the_tracker_client_and_shared_pieces_of_each_other():
    wrong = []
    for name, deps in GRAPH.items():
        sub = next((s for s in SUBSYSTEM_MAY_IMPORT if name == s or name.startswith(s + ".")), None)
        if sub is None:
            continue
        for dep in deps:
            if dep.startswith("actors") and not any(dep == a or dep.startswith(a + ".")
                                                    for a in SUBSYSTEM_MAY_IMPORT[sub]):
                wrong.append(f"{name} imports {dep}")
    assert not wrong, "\n".join(sorted(wrong))


def test_there_is_no_import_cycle():
    # Packages import their submodules only through their __init__, which we keep
    # free of imports; an edge to a package's own parent is not a cycle we care about.
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for d in sorted(GRAPH.get(n, ())):
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[n] = 2

    for n in sorted(GRAPH):
        if n not in state:
            visit(n)
    assert not cycles, "\n".join(cycles)


def test_one_module_builds_the_anthropic_client():
    builders = sorted(str(p.relative_to(ROOT)) for p in MODULES.values()
                      if "Anthropic(" in p.read_text(encoding="utf-8").replace("AsyncAnthropic(", ""))
    assert len(builders) == 1, builders


def test_ls_actors_shows_the_subsystems():
    subpackages = sorted(p.name for p in (ROOT / "actors").iterdir() if (p / "__init__.py").exists())
    assert {"tracker", "scaler", "research", "shared"} <= set(subpackages)
    loose = sorted(p.name for p in (ROOT / "actors").glob("*.py") if p.name != "__init__.py")
    # Only entry points sit at the top: the job and the command lines the README names.
    assert set(loose) <= {"main.py", "work_tracker.py", "autoresearch.py", "report.py"}, loose
