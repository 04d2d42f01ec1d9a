"""The package's architecture as the code has it: which room (subpackage) imports which.

Rooms are ordered bottom to top; a module imports only from its own room or rooms below it (lazy imports inside
functions included), so each room can be read, tested and shipped with only what is under it.
`python -m pipeline.dev.imports` prints the rooms and their graph as README's "Architecture" shows them.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
ROOMS = (  # bottom to top
    ("core", "config, errors, atomic files, the artifact layout, provenance, column names"),
    ("data", "competition tables, folds, the metric, submission frames"),
    ("text", "model directories, tokenizers, encoding, batch planning, MLM masking (no TensorFlow at import)"),
    ("modeling", "the Keras task model, its layers, target codings, the train step, devices and precision"),
    ("run", "a run directory (the Run object) and prediction from it"),
    ("train", "the k-fold loop, progress, schedules, pre-training, pseudo-labels"),
    ("evaluate", "validation report, post-processing, ensembling, the TF-IDF baseline"),
    ("kernel", "what runs inside a Kaggle notebook: finding inputs, installing wheels, inference, training"),
    ("kaggle", "what runs on your machine and talks to Kaggle: API, bundles, wheels, kernels, collect"),
    ("dev", "generated data, tiny models, exploration, this graph: never shipped"),
    ("cli", "the stage table and the stage functions run.py calls"),
)
RANK = {name: i for i, (name, _) in enumerate(ROOMS)}


def module_imports(path: Path) -> set[str]:
    """Every `pipeline.<room>.<module>` a module imports, at its top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline"):
            parts = node.module.split(".")
            found.update(".".join(parts + [a.name]) if len(parts) == 2 else node.module for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("pipeline."))
    return found


def modules() -> dict[str, Path]:
    return {"pipeline." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts): p
            for p in sorted(PACKAGE.rglob("*.py")) if p.name != "__init__.py"}


def edges() -> set[tuple[str, str]]:
    """(importing module, imported module) pairs inside the package."""
    return {(m, dep) for m, p in modules().items() for dep in module_imports(p)}


def room(module: str) -> str:
    return module.split(".")[1]


def upward(pairs=None) -> list[tuple[str, str]]:
    """Imports that point up the room order (or into a folder that is not a room)."""
    pairs = edges() if pairs is None else pairs
    return sorted((a, b) for a, b in pairs if room(b) not in RANK or RANK[room(b)] > RANK[room(a)])


def rooms_table() -> str:
    """README's table of rooms, bottom row last."""
    return "\n".join(f"| `{name}/` | {what} |" for name, what in reversed(ROOMS))


def mermaid() -> str:
    rooms = {(room(a), room(b)) for a, b in edges() if room(a) != room(b)}
    lines = ["graph TD"] + [f"  {a} --> {b}" for a, b in sorted(rooms, key=lambda e: (RANK[e[0]], RANK[e[1]]))]
    return "\n".join(lines)


if __name__ == "__main__":
    bad = upward()
    print(rooms_table(), mermaid(), sep="\n\n")
    for a, b in bad:
        print(f"upward import: {a} -> {b}", file=sys.stderr)
    sys.exit(1 if bad else 0)
