"""The package layout: the README's imports work, and no module imports one that imports it
(directly or through a chain); lower layers never import higher ones."""

import ast
import importlib
import os
import pathlib
import re

from tests.conftest import REPO

# The stages, lowest first (docs/architecture.md): a module imports only modules of its own
# stage or a lower one. The top-level modules (errors, registry, files, batching,
# distribution, cli) are stage 0 and import no stage above it.
LAYERS = {
    "": 0,
    "data": 1,
    "theory": 1,
    "models": 2,
    "corruptions": 2,
    "attacks": 3,
    "training": 4,
    "evaluation": 5,
    "reproduce": 6,
}


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
    upward = [(m, d) for m, deps in graph.items() for d in deps
              if m != "atom_tf" and stage(d) > stage(m)]  # fmt: skip
    assert upward == []
    assert {stage(m) for m in graph if m != "atom_tf"} == set(LAYERS.values())


def stage(module: str) -> int:
    """The stage of atom_tf.<package>[...] or of a top-level atom_tf.<module> (0)."""
    parts = module.split(".")
    return LAYERS[parts[1]] if len(parts) > 1 and parts[1] in LAYERS else 0


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
