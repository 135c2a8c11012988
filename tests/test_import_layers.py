"""The package's import layers: imports point down only, no cycles, every module imports on its own.

Every module under steergym/ is parsed with `ast` (nothing is imported to build the graph). Module-
level imports (run when the module is imported) and function-local ones (run when the function is
called) both count for the layer rule; the cycle rule is about module-level imports, which are the
ones that can leave a module half-initialised. A function-local import of steergym code is for
deferring a heavy dependency (torch, MuJoCo) at start-up, never for dodging a cycle.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

# Lowest first. A module may import its own layer and the layers below it, never one above. A module
# belongs to the layer of its longest matching prefix ("steergym.data.collect" beats "steergym.data").
LAYERS: list[tuple[str, str, tuple[str, ...]]] = [
    ("ground", "env ids and the env factory, the episode loop and scoring, file safety, spaces as JSON: "
               "used by all",
     ("steergym:package", "steergym.checks", "steergym.atomic", "steergym.paths", "steergym.forking",
      "steergym.registry", "steergym.rollout", "steergym.assets", "steergym.space_json", "steergym.machine_info",
      "steergym.ray_support")),
    ("envs", "simulated tasks and suite adapters, datasets on disk, the robot link: need only the ground",
     ("steergym.envs", "steergym.data", "steergym.robot")),
    ("policies", "policies act in envs; `data.collect` (and `steergym.data`, which re-exports it) runs "
                 "the scripted experts",
     ("steergym.policies", "steergym.data.collect", "steergym.data:package")),
    ("wrappers", "steering wrappers wrap envs around policies", ("steergym.wrappers",)),
    ("algorithms", "trainers take any env, wrapped or not, and policies", ("steergym.algorithms",)),
    ("bench", "reports, videos and the demo run policies and trainers; distributed: evaluation and "
              "collection sharded over Ray actors",
     ("steergym.bench", "steergym.distributed")),
    ("experiments", "experiment specs and the Ray Tune runner call the trainers' run functions",
     ("steergym.experiments",)),
    ("cli", "command-line front ends call everything (cli_args: the parser generator they use)",
     ("steergym.cli", "steergym.robot.cli", "steergym.cli_args", "steergym.ray_cli")),
]

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "steergym"
HEAVY_DEPS = ("numpy", "torch", "gymnasium", "mujoco", "stable_baselines3", "tqdm.auto")


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # the steergym module it imports
    line: int
    text: str  # the import statement
    local: bool  # inside a function body

    def __str__(self) -> str:
        where = "function-local" if self.local else "module-level"
        return f"{self.source} line {self.line} ({where}): `{self.text}`"


def module_files() -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is_package) for every .py under steergym/."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        modules[".".join(parts)] = (path, is_package)
    return modules


MODULES = module_files()


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The steergym modules `node` imports (a `from pkg import name` of a submodule names it)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join(package + ([node.module] if node.module else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    out = []
    for name in names:
        if name != "steergym" and not name.startswith("steergym."):
            continue
        while name not in MODULES and "." in name:
            name = name.rsplit(".", 1)[0]
        if name != module and name not in out:
            out.append(name)
    return out


def collect_imports() -> list[Import]:
    imports = []
    for module, (path, is_package) in MODULES.items():
        tree = ast.parse(path.read_text(), filename=str(path))

        def walk(node: ast.AST, local: bool) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    for target in _targets(module, is_package, child):
                        imports.append(Import(module, target, child.lineno, ast.unparse(child), local))
                walk(child, local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

        walk(tree, False)
    return imports


IMPORTS = collect_imports()


def layer_of(module: str) -> int | None:
    """Index in LAYERS of `module`'s longest matching prefix ("x:package" matches the package x only)."""
    best, best_len = None, -1
    for index, (_, _, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if prefix.endswith(":package"):
                name = prefix.removesuffix(":package")
                hit = module == name and MODULES.get(module, (None, False))[1]
            else:
                name = prefix
                hit = module == name or module.startswith(name + ".")
            if hit and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    return best


def test_every_module_has_a_layer():
    missing = [m for m in MODULES if layer_of(m) is None]
    assert not missing, f"modules in no layer (add them to LAYERS in {Path(__file__).name}): {missing}"


def test_imports_point_down_only():
    """No import, module-level or function-local, reaches a higher layer than its module's."""
    upward = []
    for imp in IMPORTS:
        src, dst = layer_of(imp.source), layer_of(imp.target)
        if src is not None and dst is not None and dst > src:
            upward.append(f"{imp} imports {imp.target} (layer {LAYERS[dst][0]!r}) "
                          f"from layer {LAYERS[src][0]!r}")
    assert not upward, "imports going up a layer:\n  " + "\n  ".join(upward)


def test_algorithms_never_import_bench():
    bad = [str(i) for i in IMPORTS if i.source.startswith("steergym.algorithms") and
           (i.target == "steergym.bench" or i.target.startswith("steergym.bench."))]
    assert not bad, "trainers import steergym.bench (it sits above them):\n  " + "\n  ".join(bad)


def _module_graph() -> dict[str, dict[str, Import]]:
    """Module-level import edges; importing a.b.c also runs the packages a and a.b (their __init__)."""
    graph: dict[str, dict[str, Import]] = {m: {} for m in MODULES}
    for imp in IMPORTS:
        if imp.local:
            continue
        parts = imp.target.split(".")
        for k in range(1, len(parts) + 1):
            name = ".".join(parts[:k])
            # a module's own parent packages are already being imported when it runs
            if name in MODULES and name != imp.source and not imp.source.startswith(name + "."):
                graph[imp.source].setdefault(name, imp)
    return graph


def _find_cycle(graph: dict[str, dict[str, Import]]) -> list[Import] | None:
    """One cycle as its list of edges, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path: list[str] = [start]
        edges: list[Import] = []
        stack = [iter(sorted(graph[start].items()))]
        state[start] = 1
        while stack:
            step = next(stack[-1], None)
            if step is None:
                state[path.pop()] = 2
                stack.pop()
                if edges:
                    edges.pop()
                continue
            target, imp = step
            if state.get(target) == 1:
                return edges[path.index(target):] + [imp]
            if not state.get(target):
                state[target] = 1
                path.append(target)
                edges.append(imp)
                stack.append(iter(sorted(graph[target].items())))
    return None


def test_no_import_cycles():
    cycle = _find_cycle(_module_graph())
    assert cycle is None, "module-level import cycle:\n  " + "\n  ".join(
        f"{imp} -> {imp.target}" for imp in cycle)


def test_cycle_finder_finds_a_cycle():
    """The check above can fail: a planted two-module cycle is reported with both imports."""
    a = Import("a", "b", 1, "import b", False)
    b = Import("b", "a", 2, "import a", False)
    assert _find_cycle({"a": {"b": a}, "b": {"a": b}, "c": {}}) == [a, b]
    assert _find_cycle({"a": {"b": a}, "b": {}}) is None


def test_every_module_imports_on_its_own():
    """`import steergym.x` works in a fresh interpreter for every x (no hidden order dependence).

    One subprocess imports the heavy third-party libraries once, then forks a child per module that
    imports just that module: each child starts with no steergym module loaded.
    """
    if not hasattr(os, "fork"):
        pytest.skip("needs os.fork")
    script = textwrap.dedent("""
        import importlib, os, sys, traceback
        for lib in sys.argv[1].split(","):
            try:
                importlib.import_module(lib)
            except ImportError:
                pass
        assert not any(m == "steergym" or m.startswith("steergym.") for m in sys.modules)
        failed = 0
        for name in sys.argv[2:]:
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(read)
                try:
                    importlib.import_module(name)
                    message = ""
                except BaseException:
                    message = traceback.format_exc(limit=-6)
                os.write(write, message.encode())
                os._exit(0)
            os.close(write)
            with os.fdopen(read, "rb") as pipe:
                message = pipe.read().decode()
            _, status = os.waitpid(pid, 0)
            if message or status:
                failed += 1
                print(f"FAILED import {name} (exit status {status}):\\n{message}", flush=True)
        sys.exit(1 if failed else 0)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    result = subprocess.run([sys.executable, "-c", script, ",".join(HEAVY_DEPS), *sorted(MODULES)],
                            capture_output=True, text=True, env=env, timeout=600, cwd=ROOT, check=False)
    assert result.returncode == 0, (f"modules that fail to import on their own:\n{result.stdout}\n"
                                    f"{result.stderr[-3000:]}")
