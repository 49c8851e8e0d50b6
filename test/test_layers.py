"""Three layers, imports one way: ``fillcls`` (library) <- ``fillcls_ros`` (rclpy programs) and
``training`` (trainer). Checked on the import graph (ast) and by importing with layers blocked."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fillcls", "fillcls_ros", "training")
#: What each layer may import, of the project's packages and of rclpy.
ALLOWED = {"fillcls": {"fillcls"}, "fillcls_ros": {"fillcls", "fillcls_ros", "rclpy"},
           "training": {"fillcls", "training"}}


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            parts = p.relative_to(ROOT).with_suffix("").parts
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return mods


def _imports(name: str, path: Path) -> set[str]:
    """Absolute names of everything ``name`` imports (relative imports resolved)."""
    out = set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            out.add(prefix)
            out.update(f"{prefix}.{a.name}" for a in node.names)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        deps = set()
        for imp in _imports(name, path):
            parts = imp.split(".")
            for k in range(len(parts), 0, -1):  # the longest project module naming it
                cand = ".".join(parts[:k])
                if cand in mods:
                    if cand != name and not (cand.startswith(name + ".") or name.startswith(cand + ".")):
                        deps.add(cand)
                    break
            else:
                if parts[0] == "rclpy":
                    deps.add("rclpy")
        graph[name] = deps
    return graph


def test_layering():
    bad = [f"{m} -> {d}" for m, deps in _graph().items() for d in deps
           if d.split(".")[0] not in ALLOWED[m.split(".")[0]]]
    assert not bad, "imports against the layering:\n" + "\n".join(sorted(bad))


def test_no_import_cycles():
    graph = {m: {d for d in deps if d in _modules()} for m, deps in _graph().items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(m, stack):
        state[m] = 1
        for d in graph[m]:
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


_BLOCKED_IMPORT = """
import importlib, pkgutil, sys
blocked = {blocked!r}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"{{name}} is blocked in this test")
sys.meta_path.insert(0, Block())
import {package}
names = [m.name for m in pkgutil.walk_packages({package}.__path__, "{package}.")]
for n in names:
    importlib.import_module(n)
print(len(names), "modules")
"""


@pytest.mark.parametrize("package, blocked", [
    ("fillcls", ("rclpy", "fillcls_ros", "training", "rosidl_runtime_py", "fillcls_msgs")),
    ("training", ("rclpy", "fillcls_ros", "fillcls_msgs")),
])
def test_layer_imports_without_the_layers_above(package, blocked):
    code = _BLOCKED_IMPORT.format(blocked=blocked, package=package)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "modules" in p.stdout


def test_camera_renders_frames_without_torch():
    """The synthetic camera and the frame renderer stay torch-free: the camera process starts in
    about a second instead of importing torch (~4 s, ~800 MB) for nothing."""
    code = ("import sys; import fillcls_ros.camera; from fillcls.world.render import render_frame; "
            "render_frame(0, 160, 120, n_containers=2, random_shapes=0.5); print('torch' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip() == "False"
