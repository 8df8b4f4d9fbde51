"""The package's layering, read from its source (no imports run): no import cycle among the modules, lazy
(function-level) imports included; ``networks/`` never imports nerfstudio, rendering or the inference fast
path (issue 14)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Set

PKG = Path(__file__).resolve().parents[1] / "streamsplat_ns"


def _module(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, top_level_only: bool) -> Set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    mod = _module(path)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out: Set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}  # `from pkg import module`
    return out


def _graph(top_level_only: bool) -> Dict[str, Set[str]]:
    files = {_module(p): p for p in PKG.rglob("*.py")}
    return {m: {i for i in _imports(p, top_level_only) if i in files and i != m} for m, p in files.items()}


def test_no_import_cycle():
    g = _graph(top_level_only=False)
    # a package's __init__ importing its own submodules is how packages work, not a cycle
    edges = {m: {d for d in deps if not (m == d.rsplit(".", 1)[0] and m in g)} for m, deps in g.items()}
    state: Dict[str, int] = {}
    path: list = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for d in sorted(edges[m]):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(d) :] + [d]))
            if d not in state:
                visit(d)
        path.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert len(edges) > 50  # the walk saw the package


def test_networks_stay_plain():
    """Training code never sees inference switches or rendering; no nerfstudio (lazy imports included)."""
    for p in (PKG / "networks").rglob("*.py"):
        bad = {
            i
            for i in _imports(p, top_level_only=False)
            if i.split(".")[0] == "nerfstudio"
            or i.startswith(("streamsplat_ns.rendering", "streamsplat_ns.inference", "gsplat"))
        }
        assert not bad, f"{p.relative_to(PKG)} imports {sorted(bad)}"
