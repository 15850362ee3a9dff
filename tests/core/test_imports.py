"""The import graph of the core package ``sdeflow/``.

Every module under ``sdeflow/`` is parsed (``ast``; nothing is imported) and each import of
another ``sdeflow`` module becomes an edge, at module level or inside a function (a lazy import
still ties the two modules together). The test fails on

* any import cycle inside ``sdeflow/`` (a strongly connected component of more than one module,
  or a module importing itself), except the edges listed in :data:`KNOWN_CYCLES`;
* any import of the plugins (``sdeflow_generative``) or of the benchmarks (``sdeflow_bench``,
  ``bench``) from the core: dependencies flow ``bench -> plugins -> sdeflow``.

``from . import x`` counts as an import of ``sdeflow.x`` when ``x`` is a module, else of the
package. Importing ``sdeflow.a.b`` also imports the package ``sdeflow.a`` (its ``__init__``),
except from inside ``sdeflow.a`` itself (a package is initialised before its modules).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "sdeflow"
FORBIDDEN = ("sdeflow_generative", "sdeflow_bench", "bench", "plugins")

# Edges that close a known cycle, to be removed when the cycle is gone. An edge here is
# (importer, imported). Empty since the one time loop removed solve.py <-> adaptive.py.
KNOWN_CYCLES: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _resolve(mod: str, is_pkg: bool, level: int, target: str | None) -> str:
    """Absolute name of a relative import ``from <level dots><target> import ...``."""
    base = mod.split(".")
    if not is_pkg:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _imports(mod: str, path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """(imported module name, line) of every import in ``path``, at any depth."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _resolve(mod, _is_package(path), node.level, node.module)
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield (sub if sub in known else base), node.lineno


def _with_parents(name: str, known: set[str]) -> list[str]:
    parts = name.split(".")
    return [p for p in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if p in known]


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """Edges ``module -> imported sdeflow modules`` and the forbidden imports found."""
    mods = _modules()
    known = set(mods)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    bad: list[str] = []
    for mod, path in mods.items():
        for name, line in _imports(mod, path, known):
            top = name.split(".")[0]
            if top in FORBIDDEN:
                bad.append(f"{path.relative_to(ROOT.parent)}:{line} imports {name}")
            if top != "sdeflow":
                continue
            for target in _with_parents(name, known):
                # the importer's own package (and its parents) is loaded before it: not an edge
                if target != mod and not mod.startswith(target + "."):
                    graph[mod].add(target)
    return graph, bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with a cycle (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_inside_sdeflow() -> None:
    graph, _ = import_graph()
    pruned = {m: {t for t in ts if (m, t) not in KNOWN_CYCLES} for m, ts in graph.items()}
    found = cycles(pruned)
    assert not found, "import cycles inside sdeflow/: " + "; ".join(
        " <-> ".join(c) for c in found)


def test_known_cycles_are_still_real() -> None:
    """Each allowed edge exists and closes a cycle; delete it from KNOWN_CYCLES once fixed."""
    graph, _ = import_graph()
    comps = cycles(graph)
    for a, b in KNOWN_CYCLES:
        assert b in graph.get(a, set()), f"KNOWN_CYCLES: {a} no longer imports {b}; remove it"
        assert any(a in c and b in c for c in comps), \
            f"KNOWN_CYCLES: {a} -> {b} closes no cycle any more; remove it"


def test_core_imports_no_plugin_or_benchmark() -> None:
    _, bad = import_graph()
    assert not bad, "the core imports plugins or benchmarks: " + "; ".join(bad)


def test_the_graph_sees_lazy_and_relative_imports() -> None:
    """The parser finds what the test relies on (so that the tests above can fail)."""
    graph, _ = import_graph()
    assert "sdeflow.solve" in graph["sdeflow.verify.ode"]          # ``from ..solve import``
    assert "sdeflow.verify.references" in graph["sdeflow.analytic"]
    assert "sdeflow.verify" in graph["sdeflow.cli"]                 # lazy, inside a function
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"a"}}) == [["a"]]
    assert "sdeflow.solvers" not in graph["sdeflow.solvers"]
    assert "sdeflow.solvers" in graph["sdeflow.verify.suite"]       # via ``from .. import``
    assert cycles({"a": {"b"}, "b": set()}) == []
