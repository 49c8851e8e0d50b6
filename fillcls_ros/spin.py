"""The ``main`` of fillcls's rclpy executables: start, spin, exit cleanly on SIGINT / SIGTERM."""

from __future__ import annotations

import signal
from typing import Callable

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

#: Longest wait of the executor before it looks at signals again, seconds.
_SPIN_PERIOD = 0.2


class _Stop(BaseException):
    """Raised in the main thread by SIGINT / SIGTERM; a BaseException (like KeyboardInterrupt) so
    that a callback's ``except Exception`` (the node's never-die-on-a-frame guard) cannot swallow it."""


def _raise_stop(signum, frame):
    raise _Stop(signal.Signals(signum).name)


def spin_main(make_node: Callable[[], Node], fatal: tuple[type[BaseException], ...], name: str,
              goodbye: Callable[[Node], str] | None = None, args=None) -> int:
    """Build a node with ``make_node`` and spin it until SIGINT / SIGTERM.

    Returns 0 after a signal, 1 when ``make_node`` raises one of ``fatal`` or a parameter error
    (logged as ``cannot start: ...`` under ``name``: a bad parameter or model file). ``goodbye(node)`` is
    logged on the way out. The signals are handled here, not by rclpy, so that the context is
    still valid while the node logs its goodbye and is destroyed (no ``Failed to publish log
    message to rosout``).
    """
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, _raise_stop)
    node = None
    try:
        try:
            node = make_node()
        except (*fatal, ParameterException) as exc:  # a parameter out of its declared range too
            rclpy.logging.get_logger(name).fatal(f"cannot start: {exc}")
            return 1
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        try:
            while rclpy.ok():
                executor.spin_once(timeout_sec=_SPIN_PERIOD)
        except (_Stop, KeyboardInterrupt, ExternalShutdownException):
            pass
        return 0
    except (_Stop, KeyboardInterrupt):  # a signal while the node was being built
        return 0
    finally:
        for s in (signal.SIGINT, signal.SIGTERM):  # a second signal does not cut the clean-up short
            signal.signal(s, signal.SIG_IGN)
        if node is not None:
            if goodbye is not None:
                node.get_logger().info(goodbye(node))
            node.destroy_node()
        rclpy.try_shutdown()
