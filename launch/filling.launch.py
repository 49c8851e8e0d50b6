"""Launch the filling-level node: ``ros2 launch fillcls_ros filling.launch.py [arg:=value ...]``.

Arguments: ``camera_topic`` (sensor_msgs/Image topic; ``<camera_topic>/compressed`` is used when
the params file sets ``compressed: true``), ``params_file`` (default: the installed
``config/filling.yaml``), ``namespace``, ``device`` (cpu | cuda | cuda:N), ``model_path`` ("" =
the params file's choice) and ``fastdds_profile`` (Fast DDS XML with a 16 MB shared-memory
segment so 640x480 frames are not dropped; "" leaves the environment alone).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    camera_topic = LaunchConfiguration("camera_topic")
    params_file = LaunchConfiguration("params_file")
    namespace = LaunchConfiguration("namespace")
    device = LaunchConfiguration("device")
    model_path = LaunchConfiguration("model_path")
    fastdds_profile = LaunchConfiguration("fastdds_profile")
    share = FindPackageShare("fillcls_ros")

    has_model = PythonExpression(["'", model_path, "' != ''"])

    def node(parameters, condition):
        return Node(
            package="fillcls_ros",
            executable="fillcls-node",
            name="fillcls_node",
            namespace=namespace,
            output="screen",
            emulate_tty=True,
            parameters=parameters,
            remappings=[
                ("image", camera_topic),
                ("image/compressed", [camera_topic, "/compressed"]),
            ],
            condition=condition,
        )

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
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", fastdds_profile,
                               condition=IfCondition(PythonExpression(["'", fastdds_profile, "' != ''"]))),
        # The params file first, then the launch arguments that override it.
        node([params_file, {"device": device, "model_path": model_path}], IfCondition(has_model)),
        node([params_file, {"device": device}], UnlessCondition(has_model)),
    ])
