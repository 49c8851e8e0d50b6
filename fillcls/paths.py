"""Files shipped with the package (models, config): found in the installed ament share directory
or in the source tree, so that an installed program and a checkout look in the right place.
Imports neither torch nor rclpy."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE = "fillcls_ros"
SOURCE_ROOT = Path(__file__).resolve().parent.parent


def share_file(*parts: str) -> str:
    """``<share>/fillcls_ros/<parts>`` if installed through ament and present, else the source
    tree's ``<parts>`` (returned even if missing, so that an error names it)."""
    candidates = []
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory(PACKAGE)).joinpath(*parts))
    except Exception:  # not installed through ament (pip / source tree)
        pass
    candidates.append(SOURCE_ROOT.joinpath(*parts))
    for c in candidates:
        if c.exists():
            return str(c)
    return str(candidates[-1])


def packaged_model(filename: str, env: str) -> str:
    """Path of a model shipped with the package: ``$env`` if set, else ``models/<filename>`` (see
    :func:`share_file`)."""
    return os.environ.get(env) or share_file("models", filename)
