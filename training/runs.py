"""One run bookkeeping for ``train``, ``pretrain`` and ``segtrain``.

* :class:`Settings`: the typed settings base (a frozen dataclass). Fields are declared with
  :func:`setting` (default + help text); ``replace`` converts command-line strings to the field's
  type and validates, ``to_dict`` / ``from_dict`` round-trip through JSON, ``digest`` hashes them.
  :func:`add_settings_options` / :func:`settings_from_args` make the ``--preset``, ``--set`` and
  ``--<field>`` options of a settings class, once for every command.
* :func:`add_run_options` / :func:`setup_device`: the run options (``--runs``, ``--device`` ...)
  and the one ``device="auto"`` resolution.
* :class:`RunDir`: one run directory (``config.json``, ``last.pt``, ``result.json``,
  ``train.log`` and the run's output files), its status (``done`` / ``partial`` / ``other`` /
  ``todo``) and the resume policy shared by all three: a finished run of the same settings is
  reused, an interrupted one continues, a directory holding a run of other settings is refused
  unless ``resume=False``; a write failure leaves no half-written run behind.

Every file is written with :mod:`fillcls.atomic` (temporary file + ``os.replace``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence, TypeVar

from fillcls.atomic import WriteError, atomic_path, atomic_write

Log = Callable[[str], None]
S = TypeVar("S", bound="Settings")


# --------------------------------------------------------------------------------------------
# Typed settings
# --------------------------------------------------------------------------------------------


def setting(default: Any, help: str, **metadata: Any) -> Any:
    """A settings field: its default and the help text of its ``--<field>`` option."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **metadata})
    return field(default=default, metadata={"help": help, **metadata})


def coerce(default: Any, value: Any) -> Any:
    """``value`` (possibly a command-line string) converted to the type of ``default``.

    Dicts parse from ``"S1=0.05,S2=1"`` (or one number for every key of ``default``: ``"0.5"``),
    tuples from ``"0,1,2"``, bools from ``true/false/1/0``.
    """
    if not isinstance(value, str):
        if isinstance(default, tuple):
            return tuple(value)
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value
    text = value.strip()
    if isinstance(default, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"not a boolean: {value!r}")
    if isinstance(default, (int, float)):
        return type(default)(text)
    if isinstance(default, dict):
        if "=" not in text:  # one number for every key: "0.5" -> {"S1": 0.5, "S2": 0.5, "S3": 0.5}
            return {k: float(text) for k in default}
        out = {}
        for item in filter(None, (p.strip() for p in text.split(","))):
            k, sep, v = item.partition("=")
            if not sep:
                raise ValueError(f"expected KEY=VALUE items, got {item!r}")
            out[k.strip()] = float(v)
        return out
    if isinstance(default, tuple):
        items = [p.strip() for p in text.split(",") if p.strip()]
        kind = type(default[0]) if default else float
        return tuple(kind(float(p)) if kind is int else kind(p) for p in items)
    return text


def canon(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(obj))


def digest(obj: Any, n: int = 12) -> str:
    """A short stable hash of a JSON-able object (keys sorted)."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:n]


@dataclass(frozen=True)
class Settings:
    """Base of every settings class of the trainer (frozen dataclass of :func:`setting` fields)."""

    WHAT: ClassVar[str] = "setting"  # how errors name a field: "unknown preset field ..."

    def replace(self: S, **changes: Any) -> S:
        """A copy with ``changes`` applied (strings converted to the field's type), validated."""
        names = self.field_names()
        bad = sorted(set(changes) - set(names))
        if bad:
            raise ValueError(f"unknown {self.WHAT} field(s) {', '.join(map(repr, bad))}; "
                             f"choose from {', '.join(names)}")
        clean = {}
        for key, value in changes.items():
            try:
                clean[key] = coerce(getattr(self, key), value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{key}: {exc}") from None
        out = dataclasses.replace(self, **clean)
        out.validate()
        return out

    def validate(self) -> None:
        """Raise ValueError naming the field of an impossible value (subclasses add checks)."""

    def to_dict(self) -> dict[str, Any]:
        """Field values, JSON-able (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def to_dict_without_defaults(self, names: tuple[str, ...]) -> dict[str, Any]:
        """:meth:`to_dict` without those of ``names`` that hold their defaults: fields added after
        runs were made stay out of an identity until set, so those runs still resume and skip."""
        defaults = type(self)()
        return {k: v for k, v in self.to_dict().items() if k not in names or getattr(self, k) != getattr(defaults, k)}

    @classmethod
    def from_dict(cls: type[S], d: Mapping[str, Any]) -> S:
        """Settings from :meth:`to_dict` (e.g. a ``config.json``); missing fields take the defaults."""
        return cls().replace(**dict(d))

    def digest(self, n: int = 12) -> str:
        """A short hash of every value."""
        return digest(self.to_dict(), n)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))


def fmt_value(v: Any) -> str:
    """A settings value as typed on the command line."""
    if isinstance(v, dict):
        return ",".join(f"{k}={x:g}" if isinstance(x, float) else f"{k}={x}" for k, x in v.items())
    if isinstance(v, (tuple, list)):
        return ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)
    return str(v)


def add_settings_options(parser: argparse.ArgumentParser, cls: type[Settings],
                         presets: Mapping[str, Settings], *, default: str, prefix: str,
                         preset_help: str, title: str = "preset values",
                         description: str = "override one value of the preset") -> None:
    """``--preset``, ``--set FIELD=VALUE`` and one ``--<field>`` option per field of ``cls``
    (stored as ``args.<prefix><field>``; its help lists the value of every preset)."""
    parser.add_argument("--preset", choices=list(presets), default=default, help=preset_help)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a preset value (repeatable), e.g. --set epochs=5")
    group = parser.add_argument_group(title, description)
    for f in dataclasses.fields(cls):
        vals = "; ".join(f"{n}: {fmt_value(getattr(p, f.name))}" for n, p in presets.items())
        default_value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f"{prefix}{f.name}", default=None,
                           metavar=type(default_value).__name__.upper(),
                           help=f"{f.metadata.get('help', '')} [{vals}]".replace("%", "%%"))


def settings_from_args(args: argparse.Namespace, presets: Mapping[str, S], prefix: str) -> S:
    """The preset named by ``--preset`` with ``--set`` and ``--<field>`` overrides applied
    (a bad value exits with a message naming the field)."""
    base = presets[args.preset]
    changes: dict[str, Any] = {}
    for item in getattr(args, "set", None) or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects FIELD=VALUE, got {item!r}")
        changes[key.strip().replace("-", "_")] = value
    for name in base.field_names():
        value = getattr(args, f"{prefix}{name}", None)
        if value is not None:
            changes[name] = value
    try:
        return base.replace(**changes) if changes else base
    except ValueError as exc:
        raise SystemExit(f"bad {base.WHAT} value: {exc}") from exc


# --------------------------------------------------------------------------------------------
# Run options and the device
# --------------------------------------------------------------------------------------------

DEFAULT_RUNS = "runs"


def add_run_options(parser: argparse.ArgumentParser, *, resume: bool = True, runs: bool = True,
                    device: bool = True, cache: bool = True) -> argparse._ArgumentGroup:
    """``--runs``, ``--device``, ``--threads``, ``--cache-dir`` and ``--resume/--no-resume``
    (each command adds its own extra ones to the returned group)."""
    g = parser.add_argument_group("run options")
    if runs:
        g.add_argument("--runs", default=DEFAULT_RUNS, metavar="DIR",
                       help="root of the run directories (default %(default)s)")
    if device:
        g.add_argument("--device", default="auto", help="torch device: auto (cuda if available), cpu, "
                                                         "cuda, cuda:1 ... (default %(default)s)")
        g.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    if cache:
        g.add_argument("--cache-dir", default=None, metavar="DIR",
                       help="cache of generated or decoded data (default <runs>/cache)")
    if resume:
        g.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                       help="skip finished runs and continue interrupted ones after their last "
                            "epoch (default); --no-resume starts them over (overwrites)")
    return g


def resolve_device(device: str | None) -> str:
    """``auto`` (or None) -> ``cuda`` if available, else ``cpu``; any other name unchanged."""
    if device in (None, "", "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def setup_device(args: argparse.Namespace) -> str:
    """Apply ``--threads``; the device ``--device`` names (see :func:`resolve_device`)."""
    if getattr(args, "threads", 0):
        import torch

        torch.set_num_threads(args.threads)
    return resolve_device(getattr(args, "device", "auto"))


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def read_json(path: str | os.PathLike) -> Any:
    """The JSON content of ``path``, or None if it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_json(path: str | os.PathLike, obj: Any) -> str:
    """Write ``obj`` as JSON atomically (:func:`fillcls.atomic.atomic_write`)."""
    return atomic_write(path, lambda f: json.dump(obj, f, indent=1), encoding="utf-8")


def torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` atomically, through a Python file object (a full disk is an OSError naming
    the file, not torch's C++ 'unexpected pos')."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> str:
    """Copy ``src`` to ``dst`` atomically."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return os.fspath(dst)


def tee_log(log: Log, path: str) -> Log:
    """``log`` that also appends each message, time-stamped, to the file ``path``."""
    def out(msg: str) -> None:
        log(msg)
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")
        except OSError as exc:
            raise WriteError(exc.errno, f"{path}: cannot write ({exc.strerror or exc})") from exc
    return out


# --------------------------------------------------------------------------------------------
# Run directories
# --------------------------------------------------------------------------------------------


class RunError(RuntimeError):
    """A run cannot start or go on: missing source model, run directory of other settings,
    unwritable run directory, full disk, bad data ..."""


def _diff(saved: Any, now: Any) -> str:
    """The top-level (and ``settings``) values that differ, ``key: saved -> now``."""
    if not isinstance(saved, dict) or not isinstance(now, dict):
        return "unreadable or missing identity"
    items = []
    for k in sorted(set(saved) | set(now)):
        a, b = saved.get(k), now.get(k)
        if isinstance(a, dict) and isinstance(b, dict) and k == "settings":
            items += [f"{k}.{kk}: {a.get(kk)!r} -> {b.get(kk)!r}" for kk in sorted(set(a) | set(b))
                      if a.get(kk) != b.get(kk)]
        elif a != b:
            items.append(f"{k}: {a!r} -> {b!r}")
    return ", ".join(items[:6]) + (f" (+{len(items) - 6} more)" if len(items) > 6 else "")


class RunDir:
    """One run directory and its resume policy (the same for train, pretrain and segtrain).

    ``config.json``: the run's record plus ``identity`` (the values that decide its result);
    ``last.pt``: the training state after the last finished epoch; ``result.json``: written last,
    with ``identity``; ``train.log``; ``outputs``: the final files (model checkpoints) a finished
    run must have. ``what`` names the run in messages, ``elsewhere`` the option that picks
    another directory.
    """

    CONFIG, STATE, RESULT, LOG = "config.json", "last.pt", "result.json", "train.log"

    def __init__(self, path: str | os.PathLike, identity: Mapping[str, Any], outputs: Sequence[str] = (),
                 what: str = "run", elsewhere: str = "another --runs / --tag"):
        self.path = os.fspath(path)
        self.identity = canon(dict(identity))
        self.outputs = tuple(os.fspath(p) for p in outputs)
        self.what, self.elsewhere = what, elsewhere

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def result(self) -> dict | None:
        """``result.json`` if it was made with these settings and every output exists."""
        res = read_json(self.file(self.RESULT))
        if not isinstance(res, dict) or canon(res.get("identity")) != self.identity:
            return None
        return res if all(os.path.isfile(p) for p in self.outputs) else None

    def conflict(self) -> str | None:
        """What differs when the directory holds a run of other settings, else None."""
        for name in (self.CONFIG, self.RESULT):
            saved = read_json(self.file(name))
            if isinstance(saved, dict) and canon(saved.get("identity")) != self.identity:
                return f"{name}: {_diff(saved.get('identity'), self.identity)}"
        return None

    def status(self) -> str:
        """``done``, ``other`` (a run of other settings), ``partial`` (a last.pt to resume) or ``todo``."""
        if self.result() is not None:
            return "done"
        if self.conflict() is not None:
            return "other"
        return "partial" if os.path.isfile(self.file(self.STATE)) else "todo"

    def begin(self, record: Mapping[str, Any], resume: bool = True) -> dict | None:
        """Apply the resume policy before a run: with ``resume`` a finished run's result is returned
        (nothing to do) and a directory of other settings is refused (:class:`RunError`); without,
        the run's files are removed. Then ``config.json`` is written; returns None."""
        if resume:
            done = self.result()
            if done is not None:
                return done
            why = self.conflict()
            if why is not None:
                raise RunError(f"{self.path} holds a {self.what} of another config (other settings; "
                               f"{why}); use --no-resume to overwrite it, or {self.elsewhere}")
        else:
            self.clear()
        self._created = not os.path.isdir(self.path)
        with self.guard():
            try:
                os.makedirs(self.path, exist_ok=True)
            except OSError as exc:
                raise WriteError(exc.errno, f"{self.path}: cannot create the run directory "
                                            f"({exc.strerror or exc})") from exc
            write_json(self.file(self.CONFIG), {**record, "identity": self.identity})
        return None

    def clear(self) -> None:
        """Remove the run's files (config, state, result, log, outputs)."""
        for p in [self.file(n) for n in (self.CONFIG, self.STATE, self.RESULT, self.LOG)] + list(self.outputs):
            with contextlib.suppress(FileNotFoundError):
                os.remove(p)

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """On a write failure (unwritable folder, full disk) raise :class:`RunError` naming the file;
        a run that has no finished epoch yet is removed (nothing half-written stays)."""
        try:
            yield
        except OSError as exc:
            if os.path.isfile(self.file(self.STATE)):
                kept = "its last finished epoch is kept in last.pt: run again to resume"
            else:
                kept = "nothing of it is kept"
                for n in (self.CONFIG, self.LOG):
                    with contextlib.suppress(OSError):
                        os.remove(self.file(n))
                if getattr(self, "_created", False):
                    with contextlib.suppress(OSError):
                        os.rmdir(self.path)
            raise RunError(f"{self.what} in {self.path} stopped: {exc} ({kept})") from exc

    def finish(self, result: Mapping[str, Any]) -> dict:
        """Write ``result.json`` (with ``identity``); call it after the outputs are written."""
        out = {**result, "identity": self.identity}
        with self.guard():
            write_json(self.file(self.RESULT), out)
        return canon(out)

    def tee(self, log: Log) -> Log:
        return tee_log(log, self.file(self.LOG))
