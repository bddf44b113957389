"""The package's import graph: no circles, and the entry layer imports only what is below it.

Every ``import`` statement counts, also those inside functions (a lazy import
still makes a circle at run time). Data flows one way (DESIGN.md):
cli/viz/demo -> api -> _entry -> methods/search/xdnn -> ops -> backends.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

import boundary_xg

ROOT = Path(boundary_xg.__file__).parent


def _graph() -> Dict[str, Set[str]]:
    mods = {}
    for p in ROOT.rglob("*.py"):
        rel = p.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(rel.parts)
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        mods[name] = p
    graph: Dict[str, Set[str]] = {}
    for name, p in mods.items():
        is_pkg = p.name == "__init__.py"
        deps: Set[str] = set()
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                for a in node.names:
                    full = f"{mod}.{a.name}"
                    deps.add(full if full in mods else mod)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    found: List[List[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    assert _cycles(_graph()) == []


def test_entry_layer_imports_only_lower_layers():
    g = _graph()
    assert g["boundary_xg._entry"] <= {"boundary_xg.backends", "boundary_xg.errors", "boundary_xg.ops"}


def test_nothing_below_the_front_end_imports_api():
    g = _graph()
    lower = [m for m in g if "." in m and m.split(".")[1] in ("_entry", "methods", "search", "xdnn", "ops", "backends")]
    offenders = [m for m in lower if "boundary_xg.api" in g[m]]
    assert offenders == []
    # the entry points all go through the one front door
    for m in ("boundary_xg.api", "boundary_xg.search.pipeline", "boundary_xg.xdnn.priors"):
        assert "boundary_xg._entry" in g[m], m


#: what the command line, the demo and the heatmaps may import from the package: the
#: public surface (the package root, api, errors, the public subpackages and the
#: front-end helpers of the same layer), never the backends, the methods, the entry
#: layer, ops or a private module of another part
PUBLIC_SURFACE = {
    "boundary_xg", "boundary_xg.api", "boundary_xg.errors", "boundary_xg.frameworks", "boundary_xg.viz",
    "boundary_xg.runs",
    "boundary_xg.metrics", "boundary_xg.cli_checks",
    "boundary_xg.search", "boundary_xg.xdnn", "boundary_xg.demo", "boundary_xg.demo_models",
    "boundary_xg.model_io", "boundary_xg.cli", "boundary_xg.testing", "boundary_xg.testing.models",
}


def test_cli_demo_and_viz_use_the_public_api_only():
    g = _graph()
    front = ["boundary_xg.cli", "boundary_xg.demo", "boundary_xg.demo_models", "boundary_xg.model_io"]
    front += [m for m in g if m == "boundary_xg.viz" or m.startswith("boundary_xg.viz.")]
    offenders = {}
    for m in front:
        own = {d for d in g[m] if m.startswith("boundary_xg.viz") and d.startswith("boundary_xg.viz")}
        bad = sorted(g[m] - own - PUBLIC_SURFACE)
        if bad:
            offenders[m] = bad
    assert offenders == {}, f"import internals; use the public API instead: {offenders}"


def test_method_modules_register_themselves():
    # the registry imports no method (a method module imports it), and the methods
    # package imports every method module, so the table is complete on any import
    g = _graph()
    reg = "boundary_xg.methods.registry"
    assert not {d for d in g[reg] if d.startswith("boundary_xg.methods")}
    methods = {m for m in g if m.startswith("boundary_xg.methods.")} - {reg}
    registering = {m for m in methods if reg in g[m]}
    assert {"boundary_xg.methods." + n for n in (
        "saliency", "integrated_gradients", "smoothgrad", "xgradient", "deeplift",
        "expected_gradients", "gradcam", "fullgrad", "boundary")} <= registering
    assert registering <= g["boundary_xg.methods"]
