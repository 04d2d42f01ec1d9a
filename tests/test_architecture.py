"""The rooms in folders: every import points down the room order, no module cycles, empty package inits."""
import subprocess
import sys

from conftest import ROOT
from pipeline.dev import imports


def test_every_import_points_down_the_rooms():
    assert imports.upward() == []
    rooms = {p.name for p in (ROOT / "pipeline").iterdir() if (p / "__init__.py").is_file()}
    assert rooms == set(imports.RANK)  # every folder is a room of the stated order, and the order names no ghost
    assert not list((ROOT / "pipeline").glob("*.py"))[1:]  # only pipeline/__init__.py stays at the top


def test_the_check_catches_an_upward_import():
    # a core module importing the CLI, and a module outside any room, are both reported
    fake = {("pipeline.core.config", "pipeline.cli.stages"), ("pipeline.cli.stages", "pipeline.core.config"),
            ("pipeline.data.folds", "pipeline.attic.old")}
    assert imports.upward(fake) == [("pipeline.core.config", "pipeline.cli.stages"),
                                    ("pipeline.data.folds", "pipeline.attic.old")]


def test_no_import_cycle_between_modules():
    graph = {}
    for a, b in imports.edges():
        graph.setdefault(a, set()).add(b)
    state = {}

    def visit(node, path):
        if state.get(node) == "open":
            raise AssertionError("import cycle: " + " -> ".join(path + [node]))
        if state.get(node) != "done":
            state[node] = "open"
            for nxt in sorted(graph.get(node, ())):
                visit(nxt, path + [node])
            state[node] = "done"

    for node in sorted(graph):
        visit(node, [])


def test_package_inits_are_empty_and_importing_a_room_starts_no_tensorflow():
    # kernels import the package before their bundled wheels are installed: no __init__ may import anything
    assert all(not p.read_text().strip() or p.parent.name == "pipeline"
               for p in (ROOT / "pipeline").rglob("__init__.py"))
    code = ("import sys\nimport pipeline.core.config, pipeline.text.encode, pipeline.kernel.environment\n"
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_readme_shows_the_rooms_and_graph_the_code_has():
    readme = (ROOT / "README.md").read_text()
    assert imports.rooms_table() in readme and f"```mermaid\n{imports.mermaid()}\n```" in readme
