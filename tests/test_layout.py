"""The package layout: the README's imports work, and no module imports one that imports it
(directly or through a chain); lower layers never import higher ones."""

import ast
import importlib
import os
import pathlib
import re

from tests.conftest import REPO

LAYERS = {"data": 0, "models": 1, "corruptions": 1, "training": 2, "evaluation": 3}


def import_graph() -> dict[str, set[str]]:
    modules = {}
    for root, _, files in os.walk(os.path.join(REPO, "atom_tf")):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(root, f)
                rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                deps = set()
                for node in ast.walk(ast.parse(pathlib.Path(path).read_text())):
                    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                        "atom_tf"
                    ):
                        deps |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
                    elif isinstance(node, ast.Import):
                        deps |= {a.name for a in node.names if a.name.startswith("atom_tf")}
                modules[rel.removesuffix(".__init__")] = deps
    return {m: {d for d in deps if d in modules and d != m} for m, deps in modules.items()}


def test_no_import_cycles_and_no_upward_imports():
    graph = import_graph()
    assert len(graph) > 40

    def reaches(start, goal, seen):
        return any(
            d == goal or (d not in seen and not seen.add(d) and reaches(d, goal, seen))
            for d in graph[start]
        )

    cycles = [m for m in graph if reaches(m, m, set())]
    assert cycles == []
    layer = lambda m: LAYERS.get(m.split(".")[1]) if m.count(".") else None  # noqa: E731
    upward = [(m, d) for m, deps in graph.items() for d in deps
              if layer(m) is not None and layer(d) is not None and layer(d) > layer(m)]  # fmt: skip
    assert upward == []


def test_the_readme_imports_work():
    readme = pathlib.Path(REPO, "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    imports = [line for block in blocks for line in block.splitlines()
               if line.startswith(("from atom_tf", "import atom_tf"))]  # fmt: skip
    assert len(imports) >= 5
    for line in imports:
        module, _, names = line.removeprefix("from ").partition(" import ")
        if line.startswith("import "):
            importlib.import_module(line.removeprefix("import "))
            continue
        loaded = importlib.import_module(module)
        for name in names.split(","):
            assert hasattr(loaded, name.strip()), line
