"""The one atomic file write of the project: write to a temporary file beside the target, then
``os.replace`` it, so a reader never sees a half-written file and a crash or full disk leaves the
old file (or none) in place. ROS-free and torch-free."""

from __future__ import annotations

import contextlib
import os
from typing import IO, Callable, Iterator


class WriteError(OSError):
    """A file could not be written (unwritable folder, full disk); names the file."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on any error it is
    removed. ``suffix`` keeps an extension that a writer insists on (``np.savez`` adds ``.npz``).
    OS errors (permissions, ENOSPC) become :class:`WriteError` naming ``path``."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp{os.getpid()}{suffix}")
    try:
        os.makedirs(folder, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        if isinstance(exc, WriteError):
            raise
        raise WriteError(exc.errno, f"{path}: cannot write ({exc.strerror or exc})") from exc
    except BaseException:
        _remove(tmp)
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[IO], None], mode: str = "w", **open_kw) -> str:
    """Open a temporary file beside ``path`` with ``mode``, call ``write(f)``, flush it to disk and
    move it onto ``path`` (see :func:`atomic_path`). Returns ``path``."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **open_kw) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    return os.fspath(path)


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)
