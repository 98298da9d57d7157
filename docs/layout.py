"""The project's import graph: checked by tests/test_layout.py, drawn into docs/layout.png.

    .venv/bin/python docs/layout.py        # rewrites docs/layout.png

Modules are grouped as the README's design section describes them; an arrow
A -> B means some module of A imports one of B. Solid arrows are imports at
module level, dashed ones happen only inside a function (at run time, e.g. the
manager's `gfm-ensemble train` loading the trainer's ensemble builder).
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("orchestrator", "trainer", "search_spaces", "site_configs")

# group -> (side, module-name prefixes); the first matching prefix wins, so subpackages come first.
GROUPS = {
    "orchestrator.cli": ("manager", ("orchestrator.cli", "orchestrator.__main__", "orchestrator.demo")),
    "orchestrator.phases": ("manager", ("orchestrator.phases",)),
    "orchestrator.search": ("manager", ("orchestrator.search",)),
    "orchestrator.launch": ("manager", ("orchestrator.launch",)),
    "orchestrator.views": ("manager", ("orchestrator.views",)),
    "orchestrator.trials": ("manager", ("orchestrator.trials", "orchestrator.trialdb")),
    "slices & sites": ("manager", ("orchestrator.allocation", "orchestrator.hostlist", "orchestrator.sites")),
    "orchestrator.manager": ("manager", ("orchestrator.manager", "orchestrator")),  # and the package root
    "search_spaces": ("contract", ("search_spaces",)),
    "site_configs": ("contract", ("site_configs",)),
    "trainer.contract": ("contract", ("trainer.contract",)),
    "trainer.ensemble": ("trainer", ("trainer.ensemble", "trainer.calculator")),
    "trainer.models": ("trainer", ("trainer.models",)),
    "trainer.data": ("trainer", ("trainer.data", "trainer.aseio")),
    "trainer (train loop)": ("trainer", ("trainer",)),
}
COLOURS = {"manager": "#cfe2f3", "contract": "#d9ead3", "trainer": "#fce5cd"}


def modules() -> dict[str, Path]:
    """Every module of the project's packages, by dotted name."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def import_graph() -> dict[str, dict[str, bool]]:
    """module -> {imported module: at module level?} for imports between the project's own modules."""
    known = modules()
    graph: dict[str, dict[str, bool]] = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text())
        top = {id(node) for node in tree.body}
        edges: dict[str, bool] = {}
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import mod` imports the module pkg.mod; `from mod import name` imports mod
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                           for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for target in targets:
                if target in known and target != name:
                    edges[target] = edges.get(target, False) or id(node) in top
        graph[name] = edges
    return graph


def cycles(graph: dict[str, dict[str, bool]]) -> list[list[str]]:
    """Strongly connected sets of modules (import cycles), module-level imports only."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other, eager in graph[node].items():
            if not eager:
                continue
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                other = stack.pop()
                group.append(other)
                if other == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def group_of(module: str) -> str:
    for group, (_, prefixes) in GROUPS.items():
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return group
    raise KeyError(f"{module} belongs to no group of docs/layout.py")


def group_graph() -> dict[tuple[str, str], bool]:
    """(group, imported group) -> True if any of those imports is at module level."""
    edges: dict[tuple[str, str], bool] = {}
    for module, targets in import_graph().items():
        for target, eager in targets.items():
            key = (group_of(module), group_of(target))
            if key[0] != key[1]:
                edges[key] = edges.get(key, False) or eager
    return edges


def draw(output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import FancyArrowPatch, Patch

    edges = group_graph()
    depth: dict[str, int] = {}

    def level(group: str, seen: tuple = ()) -> int:  # longest chain of imports below a group
        if group not in depth:
            below = [b for (a, b) in edges if a == group and b not in seen]
            depth[group] = 1 + max((level(b, seen + (group,)) for b in below), default=-1)
        return depth[group]

    for group in GROUPS:
        level(group)
    # Manager side on the left, trainer side on the right, the contract they share in the middle;
    # height is the longest chain of imports below a group, so every solid arrow points down.
    bands = {"manager": (0.03, 0.52), "contract": (0.40, 0.66), "trainer": (0.62, 0.97)}
    rows: dict[tuple[str, int], list[str]] = {}
    for group in GROUPS:
        rows.setdefault((GROUPS[group][0], depth[group]), []).append(group)
    top = max(depth.values())
    where = {}
    for (side, row), groups in rows.items():
        low, high = bands[side]
        for i, group in enumerate(groups):
            where[group] = (low + (high - low) * (i + 0.5) / len(groups), 0.05 + 0.9 * row / max(top, 1))
    fig, ax = plt.subplots(figsize=(13, 8))
    ax.set_axis_off()
    for (a, b), eager in sorted(edges.items()):
        ax.add_patch(FancyArrowPatch(where[a], where[b], arrowstyle="-|>", mutation_scale=11, shrinkA=16,
                                     shrinkB=16, lw=0.7, color="0.25", alpha=0.55, linestyle="-" if eager else "--",
                                     connectionstyle="arc3,rad=0.08"))
    for group, (x, y) in where.items():
        ax.text(x, y, group, ha="center", va="center", fontsize=9, zorder=4,
                bbox={"boxstyle": "round,pad=0.45", "fc": COLOURS[GROUPS[group][0]], "ec": "0.3", "lw": 0.8})
    labels = {"manager": "manager side (never imports torch)", "contract": "torch-free, shared by both sides",
              "trainer": "worker side (torch, on every rank)"}
    handles = [Patch(fc=COLOURS[side], ec="0.3", label=text) for side, text in labels.items()]
    handles.append(Line2D([], [], color="0.25", linestyle="--", label="imported only inside a function"))
    ax.legend(handles=handles, loc="lower center", ncol=4, frameon=False, fontsize=9, bbox_to_anchor=(0.5, -0.06))
    ax.set_xlim(0, 1)
    ax.set_ylim(0.0, 1.0)
    ax.set_title("Import graph by package (arrow: imports); generated by docs/layout.py", fontsize=11)
    fig.savefig(output, dpi=110, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    draw(ROOT / "docs" / "layout.png")
    print(ROOT / "docs" / "layout.png")
