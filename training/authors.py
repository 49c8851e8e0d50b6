"""Import the paper's released models (Zenodo record 4518951) as node checkpoints.

The release's file format could not be inspected when this was written. :func:`import_authors_model`
accepts the variants a PyTorch ResNet classifier is usually saved in and says which one it found:

* a state dict with torchvision keys (``conv1.weight`` ... ``fc.weight``), optionally with a
  DataParallel ``module.`` prefix;
* a MadryLab ``robustness`` state dict (``module.model.*``, ``module.normalizer.*``,
  ``module.attacker.*``), as the robust source models are: the normalizer's mean / std are kept;
* either of these under a ``model`` / ``state_dict`` / ``model_state_dict`` / ``net`` key, beside
  other entries (epoch, optimiser, arguments);
* a whole pickled ``nn.Module`` (its ``state_dict()`` is used);
* a project (fillcls) checkpoint, copied with the new header.

Files are read with :func:`training.sources.torch_load`: ``weights_only=True`` first; a file with
pickled Python objects is only unpickled with ``trust_pickle=True`` (CLI ``--trust-pickle``, the same
opt-in as for robustness source models), because unpickling can run arbitrary code.

The architecture is the first of :data:`fillcls.core.ARCHITECTURES` the weights fit exactly
(ResNet-18 expected). The head must have 4 outputs. **Class order assumption**: the outputs are in
C-CCM's order *empty (0 %), half (50 %), full (90 %), opaque* -- the project's
:data:`fillcls.core.CLASSES` order with ``opaque`` = ``unknown``. If the release documents another
order, pass it as ``class_order`` (the released outputs' classes, in output order); the head's rows
are permuted to the project's order. The input normalisation is the ImageNet mean / std unless the
file carries a robustness normalizer; the inputs are 224 px crops (``input_size``).

The checkpoint is written with :func:`fillcls.core.save_checkpoint` and read back with
:func:`fillcls.core.load_classifier` before this returns, so the node can load it
(``model_path:=...``). Its ``model_id`` defaults to ``authors-<file stem>``; the split (S1..S3), the
strategy and eps read from the file name, if there, go into the header's ``training``.

CLI: ``python -m training.authors FILE... --out PATH_OR_DIR [--trust-pickle] [--class-order ...]``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from fillcls.core import (ARCHITECTURES, CHECKPOINT_FORMAT, CLASSES, IMAGENET_MEAN, IMAGENET_STD,
                          CheckpointError, CheckpointHeader, build_model, load_classifier, read_checkpoint,
                          save_checkpoint)

from training import assets, sources
from training.command import subcommand

#: Words accepted in ``class_order`` for each project class.
CLASS_ALIASES: dict[str, str] = {"empty": "empty", "0": "empty", "0%": "empty",
                                 "half": "half", "50": "half", "50%": "half",
                                 "full": "full", "90": "full", "90%": "full",
                                 "unknown": "unknown", "opaque": "unknown"}
#: File extensions :func:`import_authors_models` picks up in a folder.
MODEL_EXTS: tuple[str, ...] = (".pt", ".pth", ".ckpt", ".tar", ".pth.tar", ".bin")
_TRANSFER = re.compile(r"(?<![A-Z])(AT|ST)[-_ ]?(?:TO[-_ ]?|->|2)?(AFT|FT)(?![A-Z])")
_SINGLE = re.compile(r"(?<![A-Z])(AT|ST)(?![A-Z])")


def class_permutation(class_order: Sequence[str]) -> list[int]:
    """Row ``i`` of the project's head = row ``perm[i]`` of the released head."""
    names = [CLASS_ALIASES.get(str(c).strip().lower()) for c in class_order]
    if None in names or sorted(names) != sorted(CLASSES):
        raise ValueError(f"class_order must name each of {', '.join(CLASSES)} once (opaque = unknown), "
                         f"got {list(class_order)}")
    return [names.index(c) for c in CLASSES]


def read_released_weights(path: str, trust_pickle: bool = False) -> tuple[dict[str, torch.Tensor], str, tuple, tuple]:
    """``(torchvision-key state dict, variant, mean, std)`` of a released model file."""
    obj = sources.torch_load(path, trust_pickle)
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        header, sd, _ = read_checkpoint(path)
        weights = {k[len("net."):]: v for k, v in sd.items() if k.startswith("net.")}
        return weights, "project checkpoint", tuple(header.mean), tuple(header.std)
    where = ""
    if isinstance(obj, Mapping) and not sources.is_state_dict(obj):
        key = next((k for k in sources.STATE_DICT_KEYS if k in obj), None)
        if key is not None:
            where, obj = f" under {key!r}", obj[key]
        else:
            where = " with extra entries"
    variant = ("pickled nn.Module" if isinstance(obj, nn.Module) else
               "pickled module of an uninstalled class" if isinstance(obj, sources.Stub) else "state dict") + where
    if isinstance(obj, sources.Stub):
        obj = sources.stub_state_dict(path, obj)
    sd = sources.extract_state_dict(path, obj)
    if sources.looks_robustness(sd):
        weights, mean, std = sources.robustness_weights(path, sd)
        return weights, f"robustness {variant}", tuple(mean), tuple(std)
    return sources.torchvision_weights(path, sd), variant, IMAGENET_MEAN, IMAGENET_STD


def _fit_architecture(path: str, weights: Mapping[str, torch.Tensor], mean, std, arch: str | None):
    """The first architecture (``arch`` only, if given) that the weights fit exactly."""
    errors = []
    for name in ([arch] if arch else ARCHITECTURES):
        model = build_model(name, len(CLASSES), mean, std)
        try:
            model.net.load_state_dict(weights, strict=True)
            return name, model
        except RuntimeError as exc:
            errors.append(f"{name}: {str(exc).splitlines()[0]}")
    raise CheckpointError(f"{path}: the weights fit none of {', '.join([arch] if arch else ARCHITECTURES)} "
                          f"({'; '.join(errors)})")


def describe_name(stem: str) -> dict[str, Any]:
    """Split, strategy and eps read from a released file name (``S1_AT-FT_eps0.05``), where present."""
    out: dict[str, Any] = {}
    m = re.search(r"(?<![A-Za-z0-9])S([123])(?![0-9])", stem, re.I)
    if m:
        out["split"] = f"S{m.group(1)}"
    m = _TRANSFER.search(stem.upper())
    if m:
        out["strategy"] = f"{m.group(1)}-{m.group(2)}"
    elif _SINGLE.search(stem.upper()):
        out["strategy"] = _SINGLE.search(stem.upper()).group(1)
    m = re.search(r"eps[-_]?([0-9]*\.?[0-9]+)", stem, re.I)
    if m:
        out["eps"] = float(m.group(1))
    return out


def import_authors_model(path: str | os.PathLike, out_path: str | os.PathLike, trust_pickle: bool = False,
                         class_order: Sequence[str] = CLASSES, model_id: str | None = None,
                         arch: str | None = None, input_size: int = 224) -> CheckpointHeader:
    """Convert one released model file into a node checkpoint at ``out_path``; return its header.

    Raises :class:`CheckpointError` naming the file if it cannot be read (pickle without
    ``trust_pickle`` included), has no 4-class ResNet head or fits no known architecture.
    """
    path, out_path = os.fspath(path), os.fspath(out_path)
    weights, variant, mean, std = read_released_weights(path, trust_pickle)
    perm = class_permutation(class_order)
    fc = weights.get("fc.weight")
    if fc is None or fc.ndim != 2:
        raise CheckpointError(f"{path}: no 'fc.weight' (not a ResNet classifier; keys {', '.join(list(weights)[:5])} ...)")
    if fc.shape[0] != len(CLASSES):
        raise CheckpointError(f"{path}: the head has {fc.shape[0]} outputs, expected {len(CLASSES)} "
                              f"({', '.join(CLASSES)})")
    weights = dict(weights)
    for key in ("fc.weight", "fc.bias"):
        if key in weights:
            weights[key] = weights[key][perm].clone()
    name, model = _fit_architecture(path, weights, mean, std, arch)
    stem = re.sub(r"(\.pth)?\.tar$|\.[A-Za-z]+$", "", os.path.basename(path))
    training = {"source": "Modas et al., ICIP 2021, released models (doi 10.5281/zenodo.4518951)",
                "file": os.path.basename(path), "sha256": assets.file_digest(path), "variant": variant,
                "class_order": [str(c) for c in class_order], **describe_name(stem)}
    header = CheckpointHeader(arch=name, classes=CLASSES, input_size=int(input_size), mean=tuple(mean),
                              std=tuple(std), model_id=model_id or f"authors-{stem}", training=training)
    save_checkpoint(out_path, model.state_dict(), header)
    load_classifier(out_path)  # what the node does at start-up
    return header


def import_authors_models(paths: Sequence[str], out: str, **kw) -> list[tuple[str, str, CheckpointHeader]]:
    """Import several files (folders are searched for :data:`MODEL_EXTS`); ``out`` is a folder when
    more than one file is imported. Returns ``(input, output, header)`` per file."""
    files = []
    for p in paths:
        if os.path.isdir(p):
            files += sorted(os.path.join(d, f) for d, _, fs in os.walk(p) for f in fs if f.lower().endswith(MODEL_EXTS))
        else:
            files.append(p)
    if not files:
        raise FileNotFoundError(f"no model files ({', '.join(MODEL_EXTS)}) in {', '.join(paths)}")
    done = []
    for f in files:
        target = out
        if len(files) > 1 or os.path.isdir(out) or out.endswith(os.sep):
            stem = re.sub(r"(\.pth)?\.tar$|\.[A-Za-z]+$", "", os.path.basename(f))
            target = os.path.join(out, f"authors-{stem}.pt")
        done.append((f, target, import_authors_model(f, target, **kw)))
    return done


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="FILE", help="released model file(s) or folder(s)")
    p.add_argument("--out", required=True, metavar="PATH", help="checkpoint to write (a folder for several)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow pickled (non weights-only) model files; only for files you trust")
    p.add_argument("--class-order", default=",".join(CLASSES), metavar="C,C,C,C",
                   help="classes of the released outputs in order (default %(default)s; opaque = unknown)")
    p.add_argument("--model-id", default=None, help="model id in the header (one file only)")
    p.add_argument("--input-size", type=int, default=224, help="classifier input side (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    """Run the import; errors become one message on stderr and exit code 1."""
    try:
        done = import_authors_models(args.paths, args.out, trust_pickle=args.trust_pickle,
                                     class_order=args.class_order.split(","), model_id=args.model_id,
                                     input_size=args.input_size)
    except (CheckpointError, ValueError, OSError) as exc:
        print(f"import-authors: {exc}", file=sys.stderr)
        return 1
    for src, dst, header in done:
        print(f"{src} -> {dst} ({header.arch}, {header.training['variant']}, model_id {header.model_id})")
    return 0


register, main = subcommand("import-authors", "convert the paper's released models to node checkpoints",
                            "training.authors", __doc__, add_arguments, run)


if __name__ == "__main__":
    sys.exit(main())
