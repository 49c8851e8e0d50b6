"""Source models for the transfer strategies (ST->FT, ST->AFT, AT->FT, AT->AFT).

A :class:`SourceSpec` names where a source model comes from, its architecture and the L2 radius
``eps_source`` it was (adversarially) trained with; it is recorded in every result.
:func:`load_source_model` returns a :class:`fillcls.core.FillingClassifier` whose backbone
holds the source weights (its head is whatever the source had; the trainer replaces it).

Formats (``SourceSpec.fmt``):

* ``project``: a fillcls checkpoint (e.g. from ``python -m training pretrain``);
* ``torchvision``: a plain torchvision state dict (``resnet18-f37072fd.pth``: ``conv1.weight``,
  ``fc.weight`` ...; a DataParallel ``module.`` prefix is accepted);
* ``robustness``: a MadryLab ``robustness`` / ``robust-models-transfer`` checkpoint: a dict with
  ``model`` (or ``state_dict``) whose keys are ``module.model.*`` (kept, prefix stripped),
  ``module.normalizer.*`` (its mean / std become the model's ``Normalize``) and
  ``module.attacker.*`` (dropped);
* ``auto``: detected from the file's content.

Files are read with ``torch.load(weights_only=True)``. Third-party checkpoints often hold pickled
Python objects (the training arguments); reading those runs arbitrary code, so it needs an
explicit opt-in (``trust_pickle=True``, CLI ``--trust-pickle``). Objects of packages that are not
installed (``robustness``, ``cox``) are then read as stubs: only the tensors matter.
"""

from __future__ import annotations

import glob
import os
import pickle
import re
import types
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import torch
from torch import nn

from fillcls.core import (ARCHITECTURES, CHECKPOINT_FORMAT, IMAGENET_MEAN, IMAGENET_STD,
                              CheckpointError, FillingClassifier, build_model, read_checkpoint)

#: Source formats :func:`load_source_model` reads.
FORMATS: tuple[str, ...] = ("auto", "project", "torchvision", "robustness")
#: Keys of a checkpoint dict that may hold the state dict, in the order they are tried.
STATE_DICT_KEYS: tuple[str, ...] = ("model", "state_dict", "model_state_dict", "net")
#: File name of a source model written by ``training pretrain``.
SOURCE_FILE = "source_{arch}_eps{eps:g}.pt"


@dataclass(frozen=True)
class SourceSpec:
    """Where a source model comes from: ``path`` in ``fmt``, architecture ``arch``, ``eps_source``."""

    path: str
    arch: str = "resnet18"
    eps_source: float = 0.0
    fmt: str = "project"
    trust_pickle: bool = False
    name: str = ""    # registry name (``imagenet``, ``robust-l2-eps0.05``, ``inhouse-eps0``) or the file name
    sha256: str = ""  # SHA-256 of the file (filled by :func:`training.assets.source_spec` / ``spec_for_file``)

    def to_dict(self) -> dict:
        return asdict(self)

    def identity(self) -> dict:
        """What a run's identity records of its source: name, SHA-256 and format (not the path:
        the same file elsewhere is the same source)."""
        return {"name": self.name or os.path.basename(self.path), "sha256": self.sha256, "format": self.fmt}


@dataclass
class SourceWeights:
    """What a source file holds, in our layout: ``state_dict`` has torchvision keys (``model.net``)."""

    state_dict: dict[str, torch.Tensor]
    fmt: str  # the format actually read ("project", "torchvision" or "robustness")
    num_classes: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    header: Any = None  # CheckpointHeader of a project file


# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------


def torch_load(path: str | os.PathLike, trust_pickle: bool = False) -> Any:
    """``torch.load`` on the CPU, ``weights_only=True`` first.

    If the file holds pickled non-tensor objects, it is unpickled with ``weights_only=False`` only
    when ``trust_pickle``; otherwise :class:`CheckpointError` names the file and the opt-in.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc).partition("WeightsUnpickler error:")[2] or str(exc)
        detail = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
        detail = detail.split(". Please")[0][:200]
        if not trust_pickle and "Unsupported global" in detail:
            raise CheckpointError(
                f"{path}: holds pickled Python objects besides tensors, which weights_only=True "
                f"refuses ({detail}). Unpickling can run arbitrary code: if you trust this file, "
                "pass --trust-pickle (SourceSpec(trust_pickle=True))") from exc
        if not trust_pickle:
            raise CheckpointError(f"{path}: not a readable checkpoint ({detail})") from exc
    except Exception as exc:  # corrupt zip, truncated file, not a torch file ...
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_lenient_pickle)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc


class Stub:
    """Stands in for a pickled object whose class cannot be imported (e.g. ``cox`` parameters)."""

    def __init__(self, *args, **kwargs):
        self._args = args

    def __setstate__(self, state):
        self.__dict__["_state"] = state

    def __setitem__(self, key, value):  # dict subclasses
        self.__dict__.setdefault("_items", {})[key] = value

    def append(self, value):  # list subclasses
        self.__dict__.setdefault("_list", []).append(value)

    def extend(self, values):
        self.__dict__.setdefault("_list", []).extend(values)


class _LenientUnpickler(pickle.Unpickler):
    """Unpickles classes of packages that are not installed (robustness, cox) as :class:`Stub`."""

    def find_class(self, module, name):
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (Stub,), {"__module__": module})


_lenient_pickle = types.ModuleType("fillcls_lenient_pickle")
_lenient_pickle.Unpickler = _LenientUnpickler
_lenient_pickle.load = lambda f, **kw: _LenientUnpickler(f, **kw).load()
_lenient_pickle.__name__ = "fillcls_lenient_pickle"


def stub_state_dict(path: str, stub: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """The tensors of a pickled ``nn.Module`` read as a stub: its ``_parameters``, ``_buffers`` and
    ``_modules`` (recursively), as ``state_dict()`` would name them."""
    if isinstance(stub, nn.Module):
        return {prefix + k: v for k, v in stub.state_dict().items()}
    state = getattr(stub, "__dict__", {}).get("_state")
    if not isinstance(state, Mapping) or "_modules" not in state:
        raise CheckpointError(f"{path}: holds a pickled {type(stub).__module__}.{type(stub).__name__} "
                              "object whose code is not installed and that is no nn.Module; save its "
                              "state_dict() instead")
    out = {}
    for group in ("_parameters", "_buffers"):
        for k, v in (state.get(group) or {}).items():
            if isinstance(v, torch.Tensor):
                out[prefix + k] = v.detach()
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            out.update(stub_state_dict(path, child, f"{prefix}{name}."))
    return out


def is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def extract_state_dict(path: str, obj: Any) -> dict[str, torch.Tensor]:
    """The tensor dict inside a loaded checkpoint (itself, or under ``model`` / ``state_dict``)."""
    if isinstance(obj, nn.Module):
        return dict(obj.state_dict())
    if isinstance(obj, Stub):
        return stub_state_dict(path, obj)
    if is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in STATE_DICT_KEYS:
            inner = obj.get(key)
            if isinstance(inner, nn.Module):
                return dict(inner.state_dict())
            if isinstance(inner, Stub):
                return stub_state_dict(path, inner)
            if is_state_dict(inner):
                return dict(inner)
        # torch.save(state_dict) with a few non-tensor entries (e.g. an epoch counter)
        tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
        if tensors and any(k.endswith(".weight") for k in tensors):
            return tensors
        found = ", ".join(map(repr, list(obj)[:8]))
        raise CheckpointError(f"{path}: no state dict found (keys {found}; expected a state dict or "
                              f"one under {' / '.join(STATE_DICT_KEYS)})")
    raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict")


_ROBUST_PREFIX = re.compile(r"^(module\.)?(model|normalizer|attacker)\.")


def looks_robustness(sd: Mapping[str, torch.Tensor]) -> bool:
    return any(_ROBUST_PREFIX.match(k) for k in sd) and any(
        re.match(r"^(module\.)?model\.", k) for k in sd)


def robustness_weights(path: str, sd: Mapping[str, torch.Tensor]) -> tuple[dict, tuple, tuple]:
    """``module.model.*`` weights (prefix stripped) and the normalizer's mean / std."""
    weights, mean, std = {}, IMAGENET_MEAN, IMAGENET_STD
    for key, value in sd.items():
        m = re.match(r"^(module\.)?model\.(.+)$", key)
        if m:
            weights[m.group(2)] = value
        elif re.match(r"^(module\.)?normalizer\.(new_)?mean$", key):
            mean = tuple(float(v) for v in value.flatten())
        elif re.match(r"^(module\.)?normalizer\.(new_)?std$", key):
            std = tuple(float(v) for v in value.flatten())
    if not weights:
        raise CheckpointError(f"{path}: no 'module.model.*' weights (not a robustness checkpoint)")
    return weights, mean, std


def torchvision_weights(path: str, sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Plain torchvision keys; strips a DataParallel ``module.`` or our own ``net.`` prefix."""
    sd = dict(sd)
    for prefix in ("module.", "net."):
        if sd and all(k.startswith(prefix) or k.startswith("normalize.") for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return sd


def read_source_weights(spec: SourceSpec) -> SourceWeights:
    """Read the weights of ``spec`` in our layout (raises :class:`CheckpointError` naming the file)."""
    path = os.fspath(spec.path)
    if spec.fmt not in FORMATS:
        raise ValueError(f"unknown source format {spec.fmt!r}; choose from {', '.join(FORMATS)}")
    if spec.fmt == "project":
        try:
            header, sd, _ = read_checkpoint(path)
        except CheckpointError as exc:
            if not os.path.isfile(path):
                raise
            raise CheckpointError(f"{exc} [read as format 'project'; for torchvision or robustness "
                                  "files use format 'auto' (--source-format auto)]") from exc
        return _project_weights(path, spec, header, sd)
    obj = torch_load(path, spec.trust_pickle)
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        if spec.fmt != "auto":
            raise CheckpointError(f"{path}: is a project (fillcls) checkpoint, not {spec.fmt} "
                                  "(use format 'project' or 'auto')")
        header, sd, _ = read_checkpoint(path)
        return _project_weights(path, spec, header, sd)
    sd = extract_state_dict(path, obj)
    robust = looks_robustness(sd)
    fmt = spec.fmt if spec.fmt != "auto" else ("robustness" if robust else "torchvision")
    if fmt == "robustness":
        weights, mean, std = robustness_weights(path, sd)
    else:
        if robust:
            raise CheckpointError(f"{path}: has robustness keys ('module.model.*'), not a torchvision "
                                  "state dict (use format 'robustness' or 'auto')")
        weights, mean, std = torchvision_weights(path, sd), IMAGENET_MEAN, IMAGENET_STD
    fc = weights.get("fc.weight")
    if fc is None or fc.ndim != 2:
        raise CheckpointError(f"{path}: no 'fc.weight' in the {fmt} weights: not a ResNet "
                              f"({', '.join(list(weights)[:5])} ...)")
    return SourceWeights(weights, fmt, int(fc.shape[0]), mean, std)


def _project_weights(path, spec, header, sd) -> SourceWeights:
    if header.arch != spec.arch:
        raise CheckpointError(f"{path}: architecture {header.arch}, expected {spec.arch}")
    weights = {k[len("net."):]: v for k, v in sd.items() if k.startswith("net.")}
    return SourceWeights(weights, "project", len(header.classes), header.mean, header.std, header)


def load_source_model(spec: SourceSpec) -> FillingClassifier:
    """Load the source model described by ``spec`` (raises CheckpointError naming the file).

    The returned model's ``normalize`` holds the source's mean / std and its head the source's
    classes; the weights must fit ``spec.arch`` exactly (strict loading).
    """
    if spec.arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {spec.arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    w = read_source_weights(spec)
    model = build_model(spec.arch, w.num_classes, w.mean, w.std)
    try:
        model.net.load_state_dict(w.state_dict, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{spec.path}: {w.fmt} weights do not fit {spec.arch}: "
                              f"{str(exc).splitlines()[0]} ...") from exc
    return model


# --------------------------------------------------------------------------------------------
# Finding source models
# --------------------------------------------------------------------------------------------


def source_path(source_dir: str | os.PathLike, arch: str, eps_source: float) -> str:
    """Path of the pretrained source model for ``arch`` at ``eps_source`` in ``source_dir``."""
    return os.path.join(os.fspath(source_dir), SOURCE_FILE.format(arch=arch, eps=float(eps_source)))


def find_source(source_dir: str | os.PathLike, arch: str, eps_source: float) -> SourceSpec:
    """The project-format source model for ``arch`` at ``eps_source`` in ``source_dir``.

    Files are named ``source_{arch}_eps{eps_source:g}.pt`` (written by ``training pretrain``).
    """
    path = source_path(source_dir, arch, eps_source)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no source model for {arch} at eps_source={eps_source:g} "
                              f"(train one with `python -m training pretrain --eps {eps_source:g}`)")
    return SourceSpec(path=path, arch=arch, eps_source=float(eps_source))


def list_sources(source_dir: str | os.PathLike, arch: str | None = None) -> list[SourceSpec]:
    """Every ``source_{arch}_eps*.pt`` in ``source_dir``, sorted by architecture then eps."""
    out = []
    for path in glob.glob(os.path.join(os.fspath(source_dir), "source_*_eps*.pt")):
        m = re.match(r"^source_(.+)_eps([0-9.eE+-]+)\.pt$", os.path.basename(path))
        if m and (arch is None or m.group(1) == arch):
            try:
                out.append(SourceSpec(path=path, arch=m.group(1), eps_source=float(m.group(2))))
            except ValueError:
                continue
    return sorted(out, key=lambda s: (s.arch, s.eps_source))
