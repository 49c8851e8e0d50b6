"""``fillcls-lifecycle-node``: the filling-level node as a managed (lifecycle) node.

Same parameters, topics and messages as ``fillcls-node``; the models and the subscription follow
the lifecycle state: *configure* loads the models and creates the publishers, *activate*
subscribes to the camera (frames cost CPU only while active), *deactivate* drops the
subscription, *cleanup* frees the models, *shutdown* frees everything. Drive it with
``ros2 lifecycle set /fillcls_node configure`` / ``activate``, or launch it with
``ros2 launch fillcls_ros filling.launch.py lifecycle:=true`` (configured and activated at start
unless ``autostart:=false``).
"""

from __future__ import annotations

import gc
import sys

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from fillcls.spec import CheckpointError

from . import parameters
from .node import FillingBehaviour, _goodbye
from .spin import spin_main


class FillingLifecycleNode(FillingBehaviour, LifecycleNode):
    """The filling-level node under lifecycle management (see the module docstring)."""

    def __init__(self, **kwargs):
        super().__init__("fillcls_node", **kwargs)
        self._init_filling()
        self.get_logger().info("unconfigured: configure loads the models, activate subscribes")

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._load()
        except (CheckpointError, ValueError, OSError) as exc:
            self.get_logger().error(f"configure failed: {exc}")
            self.estimator = None
            return TransitionCallbackReturn.FAILURE
        self._create_publishers(self.create_lifecycle_publisher)
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._subscribe()
        return super().on_activate(state)  # activates the lifecycle publishers

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unsubscribe()
        self.get_logger().info("inactive: not subscribed to the camera")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unsubscribe()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        """Destroy the publishers and free the models."""
        self._destroy_publishers(self.destroy_lifecycle_publisher)
        self.estimator = None
        gc.collect()
        self.get_logger().info("unconfigured: models freed")


def main(args=None) -> int:
    """Entry point of ``fillcls-lifecycle-node``; ``--help`` lists the parameters and exits."""
    if parameters.wants_help(sys.argv[1:] if args is None else args):
        print(parameters.help_text("fillcls-lifecycle-node", intro=__doc__.strip().split("\n\n")[0].replace("``", "")))
        return 0
    return spin_main(FillingLifecycleNode, (ValueError,), "fillcls_node", _goodbye, args)


if __name__ == "__main__":
    sys.exit(main())
