"""The library's shape, checked statically: unipose_model imports nothing of the ROS package, its
modules import each other without cycles, and no module reaches into another's private names."""
import ast
from pathlib import Path

import unipose_model

ROOT = Path(unipose_model.__file__).parent
PACKAGE = "unipose_model"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path):
    """(imported module, imported names, line) of every import statement of a module, relative
    imports made absolute; `from . import x` counts as importing the module `pkg.x` too."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, (), node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names = tuple(a.name for a in node.names)
            yield base, names, node.lineno
            for n in names:
                yield f"{base}.{n}", (), node.lineno


def test_the_library_imports_nothing_of_the_ros_package():
    found = [f"{path.relative_to(ROOT.parent)}:{line} imports {mod}"
             for name, path in _modules().items() for mod, _, line in _imports(name, path)
             if mod == "unipose_ros" or mod.startswith("unipose_ros.")]
    assert not found, "unipose_model must stay free of ROS: " + "; ".join(found)


# Deliberate, lazy (inside a function): the registry of sampling cores imports an optional core
# on first use and the core registers itself with the registry (ops/ms_deform_attn.py).
ALLOWED_LAZY = {("unipose_model.ops.ms_deform_attn", "unipose_model.ops.gather_deform_attn"),
                ("unipose_model.ops.ms_deform_attn", "unipose_model.ops.triton_deform_attn")}


def test_no_import_cycles_among_library_modules():
    """Module-level and function-level imports both count (a lazy import is a cycle all the same)."""
    modules = _modules()
    graph = {name: {mod for mod, _, _ in _imports(name, path)
                    if mod in modules and mod != name and (name, mod) not in ALLOWED_LAZY}
             for name, path in modules.items()}
    # a package's __init__ runs before its submodules: importing pkg.x imports pkg, not the reverse
    graph = {name: {d for d in deps if not name.startswith(d + ".")} for name, deps in graph.items()}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles: " + "; ".join(cycles)


def test_no_private_names_imported_across_modules():
    found = [f"{path.relative_to(ROOT.parent)}:{line} imports {mod}.{n}"
             for name, path in _modules().items() for mod, names, line in _imports(name, path)
             if mod.startswith(PACKAGE) for n in names if n.startswith("_") and not n.startswith("__")]
    assert not found, "; ".join(found)


def test_the_checks_see_imports():
    """The walker finds relative and absolute imports (so the tests above can fail)."""
    path = ROOT / "cli.py"
    mods = {m for m, _, _ in _imports("unipose_model.cli", path)}
    assert {"unipose_model.export.cli", "unipose_model.settings", "argparse"} <= mods
