"""Source models for the transfer strategies (ST->FT, ST->AFT, AT->FT, AT->AFT).

A :class:`SourceSpec` names where a source model comes from, its architecture and the L2 radius
``eps_source`` it was (adversarially) trained with; it is recorded in every result.
:func:`load_source_model` returns a :class:`fillcls_ros.core.FillingClassifier` whose backbone
holds the source weights (its head is whatever the source had; the trainer replaces it).

Formats: ``project`` (a fillcls checkpoint, e.g. from ``python -m training pretrain``).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from fillcls_ros.core import (CheckpointError, FillingClassifier, build_model, read_checkpoint)


@dataclass(frozen=True)
class SourceSpec:
    """Where a source model comes from: ``path`` in ``fmt``, architecture ``arch``, ``eps_source``."""

    path: str
    arch: str = "resnet18"
    eps_source: float = 0.0
    fmt: str = "project"
    trust_pickle: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def load_source_model(spec: SourceSpec) -> FillingClassifier:
    """Load the source model described by ``spec`` (raises CheckpointError naming the file)."""
    if spec.fmt != "project":
        raise ValueError(f"unknown source format {spec.fmt!r}")
    header, state_dict, _ = read_checkpoint(spec.path)
    if header.arch != spec.arch:
        raise CheckpointError(f"{spec.path}: architecture {header.arch}, expected {spec.arch}")
    model = build_model(header.arch, len(header.classes), header.mean, header.std)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{spec.path}: weights do not fit {header.arch}: {exc}") from exc
    return model


def find_source(source_dir: str | os.PathLike, arch: str, eps_source: float) -> SourceSpec:
    """The project-format source model for ``arch`` at ``eps_source`` in ``source_dir``.

    Files are named ``source_{arch}_eps{eps_source:g}.pt`` (written by ``training pretrain``).
    """
    path = os.path.join(os.fspath(source_dir), f"source_{arch}_eps{eps_source:g}.pt")
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no source model for {arch} at eps_source={eps_source:g} "
                              f"(train one with `python -m training pretrain --eps {eps_source:g}`)")
    return SourceSpec(path=path, arch=arch, eps_source=float(eps_source))
