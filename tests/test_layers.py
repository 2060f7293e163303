"""The package flows one way: every import in ``src/cellmaps`` and ``benchmarks`` goes to a
lower layer (or within its own package), and no module takes part in an import circle.

The layers are DESIGN.md's (README "How the package is laid out"); the graph is read from
the source with :mod:`ast` (imports inside functions count too), not from what happens to
be imported at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: lowest first; a module may import from its own package and from lower layers only
LAYERS: list[tuple[str, ...]] = [
    ("cellmaps.errors", "cellmaps.version"),
    ("cellmaps.provenance", "cellmaps.cluster"),
    ("cellmaps.io",),
    ("cellmaps.targets", "cellmaps.metrics"),
    ("cellmaps.postprocess",),
    ("cellmaps.modelfile", "cellmaps.optim"),
    ("cellmaps.nets", "cellmaps.losses"),
    ("cellmaps.recipes",),
    ("cellmaps.inference",),
    ("cellmaps.model",),
    ("cellmaps.tune", "cellmaps.batch", "cellmaps.outputs", "cellmaps.bundled"),
    ("cellmaps.training", "cellmaps.predict"),
    ("cellmaps.ki67", "cellmaps.weak_roi", "cellmaps.crosseval", "cellmaps.api"),
    ("cellmaps.cli", "cellmaps.napari_plugin"),
    # the package's __init__: the public API (load_model, evaluate, …) imported on first use
    ("cellmaps", "cellmaps.__main__", "benchmarks"),
]
#: entries that name one module, not a package of them
EXACT = {"cellmaps"}


def module_name(path: Path) -> str:
    parts = list(
        path.relative_to(ROOT / "src" if "src" in path.parts else ROOT).with_suffix("").parts
    )
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_modules() -> dict[str, Path]:
    files = [*(ROOT / "src" / "cellmaps").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]
    # not hidden folders: the peers' virtual environments (benchmarks/peers/*/.venv)
    visible = [p for p in files if not any(q.startswith(".") for q in p.relative_to(ROOT).parts)]
    return {module_name(p): p for p in visible}


def imported_modules(path: Path, name: str, known: set[str]) -> set[str]:
    """The project modules ``path`` imports (``from a import b`` counts as a.b when a.b is a
    module, else as a)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, base] if base else up)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]  # fmt: skip
        else:
            continue
        for t in targets:
            while t and t not in known:  # a name inside a module: its module
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = source_modules()
    return {n: imported_modules(p, n, set(modules)) for n, p in modules.items()}


def _contains(entry: str, module: str) -> bool:
    return module == entry or (entry not in EXACT and module.startswith(entry + "."))


def package_of(module: str) -> str:
    """The layer entry a module belongs to (its package, or itself); a module in none is an
    error, so a new module must be given its layer."""
    entries = [e for g in LAYERS for e in g if _contains(e, module)]
    if not entries:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__name__}")
    return max(entries, key=len)


def layer_of(module: str) -> int:
    entry = package_of(module)
    return next(k for k, group in enumerate(LAYERS) if entry in group)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{a} → {b}"
        for a, targets in graph.items()
        for b in targets
        if package_of(a) != package_of(b) and layer_of(b) >= layer_of(a)
    )


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(root: str) -> None:
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        x = stack.pop()
                        on.discard(x)
                        comp.append(x)
                        if x == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
            elif w not in index:
                index[w] = low[w] = counter[0]
                counter[0] += 1
                stack.append(w)
                on.add(w)
                work.append((w, iter(sorted(graph.get(w, ())))))
            elif w in on:
                low[v] = min(low[v], index[w])

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_runs_up_the_layers():
    assert upward_imports(import_graph()) == []


def test_no_import_circles():
    assert circles(import_graph()) == []


def test_the_checks_see_a_circle_and_an_upward_import():
    """The checks themselves: a made-up graph with a circle and an import from io up to
    model is caught (so an empty answer above means something)."""
    graph = {"cellmaps.io.a": {"cellmaps.model"}, "cellmaps.model": {"cellmaps.io.a"}}
    assert circles(graph) == [["cellmaps.io.a", "cellmaps.model"]]
    assert upward_imports(graph) == ["cellmaps.io.a → cellmaps.model"]
    assert circles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    with pytest.raises(AssertionError, match="no layer"):
        layer_of("cellmaps.somewhere_new")


def test_the_graph_is_read_from_the_source(tmp_path):
    """Relative imports, imports inside functions and ``from package import module`` are
    all arrows; a name imported from a module points at that module."""
    known = {"cellmaps.io", "cellmaps.io.points", "cellmaps.model", "cellmaps.io.scale"}
    f = tmp_path / "scale.py"
    f.write_text(
        "from .points import Points\n"
        "def g():\n    from cellmaps.model import Model\n"
        "from cellmaps.io import points\n"
    )
    assert imported_modules(f, "cellmaps.io.scale", known) == {
        "cellmaps.io.points",
        "cellmaps.model",
    }


@pytest.mark.parametrize("module", ["cellmaps.inference.stream", "cellmaps.recipes"])
def test_inference_and_recipes_do_not_import_the_model(module):
    graph = import_graph()
    assert "cellmaps.model" not in graph[module]


def test_every_benchmark_script_imports():
    """Each benchmark module imports with the current package (a moved or renamed name
    breaks here, not months later when the benchmark is rerun); none runs on import. The
    peers' workers (StarDist, Cellpose) run in their own environments and are left out."""
    import importlib

    peers = ("benchmarks.peers.stardist_worker", "benchmarks.peers.cellpose_worker",
             "benchmarks.peers.stardist_train")  # fmt: skip
    names = sorted(n for n in source_modules() if n.startswith("benchmarks.") and n not in peers)
    assert len(names) > 20
    for name in names:
        importlib.import_module(name)
