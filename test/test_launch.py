"""The launch file against the real launch / launch_ros API.

``launch`` and ``launch_ros`` are not installable from PyPI here, so the file is checked
statically: it must parse, import only names those packages export, declare the documented
arguments, and start the executable and share files that setup.py installs.
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch" / "filling.launch.py"

#: Public names of launch / launch_ros (Kilted) that a launch file may import.
API = {
    "launch": {"LaunchDescription"},
    "launch.actions": {"DeclareLaunchArgument", "SetEnvironmentVariable", "IncludeLaunchDescription",
                       "GroupAction", "LogInfo", "Shutdown", "EmitEvent", "RegisterEventHandler"},
    "launch.conditions": {"IfCondition", "UnlessCondition"},
    "launch.events": {"matches_action"},
    "launch.substitutions": {"LaunchConfiguration", "PathJoinSubstitution", "PythonExpression",
                             "TextSubstitution", "EnvironmentVariable"},
    "launch_ros.actions": {"Node", "LifecycleNode", "PushRosNamespace", "SetRemap"},
    "launch_ros.event_handlers": {"OnStateTransition"},
    "launch_ros.events.lifecycle": {"ChangeState"},
    "launch_ros.substitutions": {"FindPackageShare"},
}
#: Keyword arguments of launch_ros.actions.Node used here.
NODE_KWARGS = {"package", "executable", "name", "namespace", "output", "emulate_tty", "parameters",
               "remappings", "condition", "arguments", "ros_arguments", "respawn", "on_exit"}


@pytest.fixture(scope="module")
def tree():
    return ast.parse(LAUNCH.read_text(), filename=str(LAUNCH))


def _calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", None)) == name]


def test_imports_exist_in_launch_api(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.module in API, node.module
            for alias in node.names:
                assert alias.name in API[node.module], f"{node.module}.{alias.name}"


def test_generate_launch_description_defined(tree):
    names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert "generate_launch_description" in names


def test_documented_arguments_declared_and_used(tree):
    declared = {c.args[0].value for c in _calls(tree, "DeclareLaunchArgument")}
    used = {c.args[0].value for c in _calls(tree, "LaunchConfiguration")}
    for arg in ("camera_topic", "params_file", "namespace", "device", "lifecycle", "autostart"):
        assert arg in declared and arg in used, arg
    assert used <= declared


def _node_kwargs(tree, call) -> dict:
    """Keyword arguments of a Node / LifecycleNode call, ``**name`` expanded from ``name = dict(...)``."""
    kw = {}
    for k in call.keywords:
        if k.arg is None:  # **common
            (assign,) = [n for n in ast.walk(tree) if isinstance(n, ast.Assign)
                         and getattr(n.targets[0], "id", None) == k.value.id]
            kw.update({d.arg: d.value for d in assign.value.keywords})
        else:
            kw[k.arg] = k.value
    return kw


def test_node_runs_installed_executable_with_params_and_remaps(tree):
    nodes = _calls(tree, "Node") + _calls(tree, "LifecycleNode")
    assert len(nodes) == 2  # plain and lifecycle, each made for model_path given or not
    setup = (ROOT / "setup.py").read_text()
    scripts = set(re.findall(r'"([\w-]+) = fillcls_ros\.', setup))
    for n in nodes:
        kw = _node_kwargs(tree, n)
        assert set(kw) <= NODE_KWARGS
        assert kw["package"].value == "fillcls_ros"
        assert kw["executable"].value in scripts
    src = LAUNCH.read_text()
    assert '("image", camera_topic)' in src
    assert '"config", "filling.yaml"' in src and (ROOT / "config" / "filling.yaml").is_file()
    assert '"config", "fastdds_shm.xml"' in src and (ROOT / "config" / "fastdds_shm.xml").is_file()
    assert 'glob("launch/*.launch.py")' in setup and 'glob("config/*.yaml")' in setup


def test_package_xml_declares_messages_dependency():
    xml = (ROOT / "package.xml").read_text()
    assert "<exec_depend>fillcls_msgs</exec_depend>" in xml
    assert "<build_type>ament_python</build_type>" in xml


def test_launch_ends_with_the_node_and_fails_when_it_fails(tree):
    """on_exit: a callable (ProcessExited, LaunchContext) -> actions; it raises on a failed node
    (launch then returns 1) and otherwise shuts the launch down."""
    for n in _calls(tree, "Node") + _calls(tree, "LifecycleNode"):
        kw = _node_kwargs(tree, n)
        assert getattr(kw.get("on_exit"), "id", None) == "_on_node_exit"
    src = LAUNCH.read_text()
    namespace: dict = {}
    fn_src = ast.get_source_segment(src, next(f for f in tree.body if getattr(f, "name", "") == "_on_node_exit"))

    class Shutdown:  # stand-in for launch.actions.Shutdown
        def __init__(self, reason=""):
            self.reason = reason

    namespace["Shutdown"] = Shutdown
    exec(fn_src, namespace)
    on_exit = namespace["_on_node_exit"]

    class Event:
        def __init__(self, rc):
            self.returncode = rc

    class Context:
        def __init__(self, down):
            self.is_shutdown = down

    with pytest.raises(RuntimeError, match="code 1"):
        on_exit(Event(1), Context(False))
    (action,) = on_exit(Event(0), Context(False))
    assert isinstance(action, Shutdown)
    assert isinstance(on_exit(Event(-2), Context(True))[0], Shutdown)  # killed while shutting down: no error
