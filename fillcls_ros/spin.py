"""The ``main`` of fillcls's rclpy executables: start, spin, exit cleanly on SIGINT / SIGTERM."""

from __future__ import annotations

from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node


def spin_main(make_node: Callable[[], Node], fatal: tuple[type[BaseException], ...], name: str,
              goodbye: Callable[[Node], str] | None = None, args=None) -> int:
    """Build a node with ``make_node`` and spin it until SIGINT / SIGTERM.

    Returns 0 after a signal, 1 when ``make_node`` raises one of ``fatal`` (logged as
    ``cannot start: ...`` under ``name``: a bad parameter or model file). ``goodbye(node)`` is
    logged on the way out.
    """
    rclpy.init(args=args)
    try:
        node = make_node()
    except fatal as exc:
        rclpy.logging.get_logger(name).fatal(f"cannot start: {exc}")
        rclpy.try_shutdown()
        return 1
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if node.context.ok():  # a real error, not the context closed under spin by SIGTERM
            raise
    finally:
        if goodbye is not None:
            # not the node's own logger: it publishes to /rosout, whose context a signal may have closed
            rclpy.logging.get_logger(node.get_name()).info(goodbye(node))
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
