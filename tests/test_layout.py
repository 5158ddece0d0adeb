"""The library's shape: one public namespace, no import cycles, internals out of the public signatures."""

import ast
import inspect

import jaxmlp as jm

from helpers import REPO

PACKAGE = REPO / "jaxmlp"


def module_name(path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path, modules) -> set:
    """jaxmlp modules imported anywhere in the file (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("jaxmlp")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jaxmlp"):
            for a in node.names:  # `from jaxmlp import data` imports the module jaxmlp.data
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in modules else node.module)
    return found


def test_no_import_cycles():
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {m: {i for i in imports_of(p, modules) if i in modules and i != m} for m, p in modules.items()}
    # the package's own __init__ re-exports; a module importing "jaxmlp" (the namespace) from inside
    # the library would close a cycle through it, so only cli (the top) may
    assert {m for m, deps in graph.items() if "jaxmlp" in deps} <= {"jaxmlp.cli"}
    graph["jaxmlp"] = set()  # what __init__ imports is checked by the others' edges
    done, active = set(), []

    def visit(m):
        if m in active:
            raise AssertionError("import cycle: " + " → ".join(active[active.index(m) :] + [m]))
        if m in done:
            return
        active.append(m)
        for d in graph[m]:
            visit(d)
        active.pop()
        done.add(m)

    for m in graph:
        visit(m)


def test_public_namespace():
    for name in [
        "MLPConfig",
        "Hyper",
        "init",
        "forward",
        "loss_and_grads",
        "predict",
        "TrainConfig",
        "TrainState",
        "init_state",
        "train_step",
        "train_epoch",
        "evaluate",
        "fit",
        "load_dataset",
        "optim",
        "run_sweep",
        "grid",
        "random_sample",
        "check_gradients",
        "save_checkpoint",
        "load_checkpoint",
        "load_model",
    ]:
        assert name in jm.__all__, name
    assert all(hasattr(jm, name) for name in jm.__all__)
    assert len(set(jm.__all__)) == len(jm.__all__)
    assert not [n for n in jm.__all__ if n.startswith("_") and n != "__version__"]


def test_internals_are_not_in_public_signatures():
    """Width masks, the gradient-function swap and a shared batch order are sweep and benchmark
    business: no public function takes them."""
    for name in jm.__all__:
        obj = getattr(jm, name)
        if inspect.isfunction(obj):
            params = set(inspect.signature(obj).parameters)
            assert not params & {"masks", "grad_fn", "idx"}, (name, params)
    assert list(inspect.signature(jm.forward).parameters) == ["params", "state", "x", "config", "hyper", "train", "key"]


def test_the_notebook_reproduction_is_not_in_the_library():
    assert not (PACKAGE / "seed.py").exists() and (REPO / "experiments" / "seed_model.py").is_file()
