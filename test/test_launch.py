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
                       "GroupAction", "LogInfo"},
    "launch.conditions": {"IfCondition", "UnlessCondition"},
    "launch.substitutions": {"LaunchConfiguration", "PathJoinSubstitution", "PythonExpression",
                             "TextSubstitution", "EnvironmentVariable"},
    "launch_ros.actions": {"Node", "PushRosNamespace", "SetRemap"},
    "launch_ros.substitutions": {"FindPackageShare"},
}
#: Keyword arguments of launch_ros.actions.Node used here.
NODE_KWARGS = {"package", "executable", "name", "namespace", "output", "emulate_tty", "parameters",
               "remappings", "condition", "arguments", "ros_arguments", "respawn"}


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
    for arg in ("camera_topic", "params_file", "namespace", "device"):
        assert arg in declared and arg in used, arg
    assert used <= declared


def test_node_runs_installed_executable_with_params_and_remaps(tree):
    nodes = _calls(tree, "Node")
    assert nodes
    setup = (ROOT / "setup.py").read_text()
    scripts = set(re.findall(r'"([\w-]+) = fillcls_ros\.', setup))
    for n in nodes:
        kw = {k.arg: k.value for k in n.keywords}
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
