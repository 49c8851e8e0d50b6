"""Launch the filling-level node: ``ros2 launch fillcls_ros filling.launch.py [arg:=value ...]``.

Arguments: ``camera_topic`` (sensor_msgs/Image topic; ``<camera_topic>/compressed`` is used when
the params file sets ``compressed: true``), ``params_file`` (default: the installed
``config/filling.yaml``), ``namespace``, ``device`` (cpu | cuda | cuda:N), ``model_path`` ("" =
the params file's choice), ``fastdds_profile`` (Fast DDS XML with a 16 MB shared-memory
segment so 640x480 frames are not dropped; "" leaves the environment alone), ``lifecycle``
(true: the managed node ``fillcls-lifecycle-node``) and ``autostart`` (with ``lifecycle``:
configure and activate it at once; false leaves it unconfigured for a lifecycle manager) and
``cameras`` (a YAML list of camera namespaces, e.g. ``cameras:="[cam_left, cam_right]"``: one node
serves them all, on ``cam_left/image`` ... ``cam_left/filling_level`` (``camera_topic`` then does
not apply); "" keeps the params file's value).

The launch ends with the node: when the node exits (e.g. it cannot start: a missing model, a bad
parameter) the whole launch shuts down, and with a non-zero exit code when the node failed.
"""

import itertools

import lifecycle_msgs.msg
from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, EmitEvent, RegisterEventHandler, SetEnvironmentVariable,
                            Shutdown)
from launch.conditions import IfCondition
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.substitutions import FindPackageShare


def _on_node_exit(event, context):
    """End the launch with the node; a failed node (non-zero exit, not during a shutdown) makes
    the launch exit non-zero (launch returns 1 when an event handler raises)."""
    if event.returncode != 0 and not context.is_shutdown:
        raise RuntimeError(f"fillcls_node exited with code {event.returncode} (see its log above)")
    return [Shutdown(reason=f"fillcls_node exited with code {event.returncode}")]


def _when(*terms):
    """IfCondition on a Python expression joined from strings and substitutions."""
    return IfCondition(PythonExpression(list(terms)))


def generate_launch_description() -> LaunchDescription:
    camera_topic = LaunchConfiguration("camera_topic")
    params_file = LaunchConfiguration("params_file")
    namespace = LaunchConfiguration("namespace")
    device = LaunchConfiguration("device")
    model_path = LaunchConfiguration("model_path")
    fastdds_profile = LaunchConfiguration("fastdds_profile")
    lifecycle = LaunchConfiguration("lifecycle")
    autostart = LaunchConfiguration("autostart")
    cameras = LaunchConfiguration("cameras")
    share = FindPackageShare("fillcls_ros")

    is_lifecycle = ["'", lifecycle, "'.lower() in ('true', '1')"]
    common = dict(package="fillcls_ros", name="fillcls_node", namespace=namespace, output="screen",
                  emulate_tty=True, remappings=[("image", camera_topic),
                                                ("image/compressed", [camera_topic, "/compressed"])],
                  on_exit=_on_node_exit)
    # The params file first, then the launch arguments that override it: model_path and cameras only
    # when given (launch_ros refuses an empty list), so one variant per combination of the two.
    variants = []
    for given in itertools.product((True, False), repeat=2):
        overrides, when = {"device": device}, []
        for (name, value), on in zip((("model_path", model_path), ("cameras", cameras)), given):
            if on:
                overrides[name] = value
            when += ["'", value, "' != '' and " if on else "' == '' and "]
        variants.append(([params_file, overrides], when))
    plain = [Node(executable="fillcls-node", parameters=params, condition=_when(*when, "not ", *is_lifecycle),
                  **common) for params, when in variants]
    managed = [LifecycleNode(executable="fillcls-lifecycle-node", parameters=params,
                             condition=_when(*when, *is_lifecycle), **common) for params, when in variants]
    starting = _when(*is_lifecycle, " and '", autostart, "'.lower() in ('true', '1')")
    autostart_actions = []
    for node in managed:  # configure at start; activate once inactive
        autostart_actions += [
            RegisterEventHandler(OnStateTransition(
                target_lifecycle_node=node, goal_state="inactive",
                entities=[EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                                      transition_id=lifecycle_msgs.msg.Transition.TRANSITION_ACTIVATE))]),
                condition=starting),
            EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                        transition_id=lifecycle_msgs.msg.Transition.TRANSITION_CONFIGURE),
                      condition=starting),
        ]

    return LaunchDescription([
        DeclareLaunchArgument("camera_topic", default_value="/camera/image_raw",
                              description="sensor_msgs/Image topic to classify"),
        DeclareLaunchArgument("params_file",
                              default_value=PathJoinSubstitution([share, "config", "filling.yaml"]),
                              description="ROS parameters file of the node"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace of the node and its relative topics"),
        DeclareLaunchArgument("device", default_value="cuda",
                              description="cpu | cuda | cuda:N (falls back to the CPU with a warning)"),
        DeclareLaunchArgument("model_path", default_value="",
                              description="classifier checkpoint; empty keeps the params file's value"),
        DeclareLaunchArgument("fastdds_profile",
                              default_value=PathJoinSubstitution([share, "config", "fastdds_shm.xml"]),
                              description="Fast DDS profile XML (16 MB SHM segment); empty = unchanged"),
        DeclareLaunchArgument("lifecycle", default_value="false",
                              description="true: the managed (lifecycle) node fillcls-lifecycle-node"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="with lifecycle:=true, configure and activate the node at start"),
        DeclareLaunchArgument("cameras", default_value="",
                              description="YAML list of camera namespaces served by one node, e.g. "
                                          "[cam_left, cam_right]; empty keeps the params file's value"),
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", fastdds_profile,
                               condition=_when("'", fastdds_profile, "' != ''")),
        # OpenCV would print a line per corrupt compressed frame; the node counts them instead
        SetEnvironmentVariable("OPENCV_LOG_LEVEL", "ERROR"),
        *plain, *managed, *autostart_actions,
    ])
