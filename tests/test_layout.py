"""sdlib's layout: groups by job, lower layers never import higher ones, no import cycles,
and building a pipeline loads none of the book's, the miniature world's, training's or the
benchmarks' code."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

SDLIB = Path(__file__).resolve().parents[1] / "sdlib"

# Each group's layer, lowest first. A module may import its own group and lower layers; groups that
# share a layer stay independent of each other.
LAYERS = {
    "core": 0,  # errors, config, validation, backend, tokenizer, device, editing, native_logs,
    # progress
    "models": 1, "sampling": 1,
    "presets": 2,
    "loading": 3,
    "adapters": 4,  # the pipeline's LoRA and textual-inversion methods
    "pipeline": 5,
    "doctor": 5.5,  # checks the machine with the pipeline; the package exports it: sdlib.doctor()
    "sdlib": 6,  # the package itself: __init__ exports the pipeline
    "training": 7,
    "batch": 7,  # many images, resumable, on Ray Data workers: the command line's `batch` uses it
    "mini": 8, "book": 8, "cli": 8,
    "__main__": 9,
}
# distribution: batch rows over keras.distribution devices
CORE = {"errors", "config", "validation", "backend", "tokenizer", "device", "editing",
        "native_logs", "distribution", "progress"}


def module_name(path):
    parts = path.relative_to(SDLIB.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def group(module):
    parts = module.split(".")
    if len(parts) == 1:
        return "sdlib"
    return "core" if parts[1] in CORE else parts[1]


def imports(path):
    """(imported sdlib module, line, inside a function?) for every import in the file."""
    tree = ast.parse(path.read_text())
    nested = {id(node) for function in ast.walk(tree)
              if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
              for node in ast.walk(function)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from sdlib.models import layers` imports the module sdlib.models.layers
            names = [f"{node.module}.{alias.name}" if (SDLIB.parent / f"{node.module}.{alias.name}"
                     .replace(".", "/")).with_suffix(".py").exists()
                     or (SDLIB.parent / f"{node.module}.{alias.name}".replace(".", "/")).is_dir()
                     else node.module for alias in node.names]
        else:
            continue
        found += [(name, node.lineno, id(node) in nested) for name in names
                  if name == "sdlib" or name.startswith("sdlib.")]
    return found


GRAPH = {module_name(path): imports(path) for path in sorted(SDLIB.rglob("*.py"))}


def test_the_graph_covers_every_group():
    assert {group(module) for module in GRAPH} == set(LAYERS)


def test_no_module_imports_a_higher_layer_or_a_sibling_group():
    wrong = []
    for module, found in GRAPH.items():
        for imported, line, _ in found:
            mine, theirs = group(module), group(imported)
            if theirs == mine:
                continue
            if LAYERS[theirs] > LAYERS[mine] or LAYERS[theirs] == LAYERS[mine]:
                wrong.append(f"{module}:{line} imports {imported} ({mine} -> {theirs})")
    assert wrong == []


def test_no_import_inside_a_function():
    """A function-level import of sdlib code is how a cycle hides; only optional third-party
    packages (a backend, huggingface_hub) are imported where they are needed."""
    nested = [f"{module}:{line} imports {imported}" for module, found in GRAPH.items()
              for imported, line, inside in found if inside]
    assert nested == []


def test_no_import_cycles():
    def ancestors(module):
        parts = module.split(".")
        return {".".join(parts[:depth]) for depth in range(1, len(parts))}

    # Importing sdlib.x.y from outside sdlib.x also runs sdlib/x/__init__.py.
    edges = {module: {target for imported, _, _ in found if imported in GRAPH
                      for target in {imported} | (ancestors(imported) - ancestors(module)
                                                  - {module})}
             for module, found in GRAPH.items()}
    state, stack, cycles = {}, [], []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for target in sorted(edges[module]):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)
    assert cycles == []


def test_building_a_pipeline_loads_no_book_mini_training_cli_or_benchmark_code():
    code = ("import json, sys, sdlib\n"
            "pipe = sdlib.StableDiffusion.from_preset('tiny')\n"
            "print(json.dumps(sorted(m for m in sys.modules"
            " if m.startswith(('sdlib', 'bench')))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=300).stdout
    loaded = json.loads(out.strip().splitlines()[-1])
    assert "sdlib.pipeline" in loaded and "sdlib.loading.build" in loaded
    unwanted = [name for name in loaded if name.startswith(("sdlib.book", "sdlib.mini",
                                                            "sdlib.training", "sdlib.cli",
                                                            "bench"))]
    assert unwanted == []


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_every_module_says_what_it_is(module):
    path = SDLIB.parent / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = SDLIB.parent / module.replace(".", "/") / "__init__.py"
    assert ast.get_docstring(ast.parse(path.read_text())), f"{module} has no docstring"
