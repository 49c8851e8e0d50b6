"""The paper's real assets by name: source models, the Mask R-CNN weights, C-CCM, the authors' models.

Modas et al. (ICIP 2021) fine-tune the torchvision ImageNet ResNet-18 (ST->FT, ST->AFT) and the
L2-robust ImageNet ResNet-18s of Salman et al. 2020 (AT->FT, AT->AFT) on C-CCM. This module names
every file a researcher needs to reproduce that setting (:data:`REGISTRY`):

=====================  =========  =====================================  ==========================
name                   kind       file / folder in the asset directory   check
=====================  =========  =====================================  ==========================
``imagenet``           source     ``resnet18-f37072fd.pth``              SHA-256 prefix ``f37072fd``
``robust-l2-eps{E}``   source     ``resnet18_l2_eps{E}.ckpt``            SHA-256 of the first download
``inhouse-eps{E}``     source     ``source_resnet18_eps{E}.pt``          (made by ``training pretrain``)
``maskrcnn-coco``      segmenter  ``maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth``  SHA-256 prefix ``bf2d0c1e``
``c-ccm``              dataset    folder ``c-ccm/`` (Zenodo 4642577)     MD5 of each Zenodo file
``authors-models``     models     folder ``authors-models/`` (Zenodo 4518951)  MD5 of each Zenodo file
=====================  =========  =====================================  ==========================

``E`` is one of :data:`ROBUST_EPS` (written as the publisher writes it: ``0.05``, ``3``).

Hashes. torchvision puts the first 8 hex digits of a file's SHA-256 in its name (torch.hub's
``check_hash`` rule): :func:`verify` checks that prefix. Salman et al. publish no hash: the first
verified download records the file's SHA-256 in ``FILE.sha256`` beside it and later checks compare
against that record (trust on first use). Zenodo's REST API (``GET <api>/records/<id>``, JSON)
lists each file of a record with ``key``, ``size``, ``checksum`` (``"md5:<hex>"``) and
``links.self`` (the download URL); :mod:`training.fetch` downloads and checks every file with it.

URLs. Every base URL can be changed, for mirrors and for tests (``base_urls`` argument, else the
environment variable, else the default):

* ``torchvision`` / ``$FILLCLS_TORCHVISION_URL``: default ``https://download.pytorch.org/models``;
* ``robust`` / ``$FILLCLS_ROBUST_URL``: a template with ``{file}``; default the Hugging Face
  mirror ``https://huggingface.co/madrylab/robust-imagenet-models/resolve/main/{file}``. The
  publisher's own copy is an Azure blob whose URL carries a signed query string: copy it from the
  microsoft/robust-models-transfer README and put ``{file}`` in place of the file name;
* ``zenodo`` / ``$FILLCLS_ZENODO_URL``: the Zenodo API root, default ``https://zenodo.org/api``.

Formats (:func:`detect_format`) are those of :mod:`training.sources` (``torchvision``,
``robustness``, ``project``); their readers are reused, a pickled robustness checkpoint is
recognised without unpickling it (its pickle opcodes are scanned, no code runs).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickletools
import re
import zipfile
from dataclasses import dataclass, field
from typing import Any, Mapping

from fillcls.atomic import atomic_write
from fillcls.core import CHECKPOINT_FORMAT, CheckpointError

#: Default asset directory (``training fetch --dir``, the trainer's ``--source-dir`` with ``sources=paper``).
DEFAULT_DIR = os.environ.get("FILLCLS_ASSETS", "assets")
#: Kinds of asset.
KINDS: tuple[str, ...] = ("source", "segmenter", "dataset", "models")
#: L2 radii of Salman et al.'s robust ImageNet ResNet-18s, as written in their file names.
ROBUST_EPS: tuple[str, ...] = ("0", "0.01", "0.03", "0.05", "0.1", "0.25", "0.5", "1", "3", "5")
#: Default base URLs (see the module docstring); keys of ``base_urls``.
DEFAULT_URLS: dict[str, str] = {
    "torchvision": "https://download.pytorch.org/models",
    "robust": "https://huggingface.co/madrylab/robust-imagenet-models/resolve/main/{file}",
    "zenodo": "https://zenodo.org/api",
}
#: Environment variable overriding each base URL.
URL_ENV: dict[str, str] = {"torchvision": "FILLCLS_TORCHVISION_URL", "robust": "FILLCLS_ROBUST_URL",
                           "zenodo": "FILLCLS_ZENODO_URL"}
#: Name of the file that records the SHA-256 of a file without a published hash (``FILE + suffix``).
HASH_SUFFIX = ".sha256"
#: Written by :mod:`training.fetch` into a Zenodo folder: the record listing and what was fetched.
RECORD_FILE = "zenodo-record.json"
FETCHED_FILE = ".fetched.json"

_SALMAN = ("Salman, Ilyas, Engstrom, Kapoor, Madry, 'Do adversarially robust ImageNet models transfer "
           "better?', NeurIPS 2020; MIT licence (microsoft/robust-models-transfer)")
_TORCHVISION = "torchvision model weights (BSD-3-Clause code; see the torchvision docs for the weights' terms)"


class AssetError(ValueError):
    """An asset name is unknown, or a file is not what its registry entry says (names the file)."""


class MissingAsset(FileNotFoundError):
    """An asset's file is not in the directory; the message names the file, the URL and the fetch command."""


@dataclass(frozen=True)
class Asset:
    """One registry entry. ``filename`` is a file (source, segmenter) or a folder (Zenodo record)."""

    name: str
    kind: str
    filename: str
    url_key: str = ""            # which base URL builds the download URL: torchvision | robust | zenodo | ""
    sha256: str | None = None    # full hex digest or a prefix of it; None: not published
    fmt: str = ""                # torchvision | robustness | project | zenodo
    size: int | None = None      # bytes, where known
    note: str = ""               # licence / citation
    eps_source: float | None = None
    zenodo_record: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def url(self, base_urls: Mapping[str, str] | None = None) -> str:
        """Download URL (for a Zenodo record: its API URL listing the files)."""
        if not self.url_key:
            return ""
        base = base_url(self.url_key, base_urls)
        if self.url_key == "zenodo":
            return f"{base.rstrip('/')}/records/{self.zenodo_record}"
        if "{file}" in base:
            return base.replace("{file}", self.filename)
        return f"{base.rstrip('/')}/{self.filename}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "filename": self.filename, "url": self.url(),
                "sha256": self.sha256, "format": self.fmt, "size": self.size, "note": self.note,
                "eps_source": self.eps_source, "zenodo_record": self.zenodo_record}


def base_url(key: str, base_urls: Mapping[str, str] | None = None) -> str:
    """Base URL ``key`` (torchvision / robust / zenodo): ``base_urls[key]``, else ``$FILLCLS_*``, else the default."""
    if key not in DEFAULT_URLS:
        raise AssetError(f"unknown URL key {key!r}; choose from {', '.join(DEFAULT_URLS)}")
    return (base_urls or {}).get(key) or os.environ.get(URL_ENV[key]) or DEFAULT_URLS[key]


def _build_registry() -> dict[str, Asset]:
    reg = {
        "imagenet": Asset("imagenet", "source", "resnet18-f37072fd.pth", "torchvision", "f37072fd",
                          "torchvision", None, "ResNet18_Weights.IMAGENET1K_V1 (44.7 MB). " + _TORCHVISION,
                          eps_source=0.0),
        "maskrcnn-coco": Asset("maskrcnn-coco", "segmenter", "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth",
                               "torchvision", "bf2d0c1e", "torchvision", None,
                               "MaskRCNN_ResNet50_FPN_Weights.COCO_V1 (170 MB), for segmentation_backend "
                               "maskrcnn. " + _TORCHVISION),
        "c-ccm": Asset("c-ccm", "dataset", "c-ccm", "zenodo", None, "zenodo", None,
                       "Crop-CCM, 10,216 crops of 8 CCM containers (Modas, Xompero, Sanchez-Matilla, "
                       "Frossard, Cavallaro, ICIP 2021); doi 10.5281/zenodo.4642577; see the record's "
                       "licence", zenodo_record=4642577),
        "authors-models": Asset("authors-models", "models", "authors-models", "zenodo", None, "zenodo", None,
                                "the paper's trained ResNet-18s, six strategies x three splits (about "
                                "1.5 GB); doi 10.5281/zenodo.4518951; see the record's licence",
                                zenodo_record=4518951),
    }
    for eps in ROBUST_EPS:
        name = f"robust-l2-eps{eps}"
        reg[name] = Asset(name, "source", f"resnet18_l2_eps{eps}.ckpt", "robust", None, "robustness", None,
                          f"L2-robust ImageNet ResNet-18, eps {eps}. {_SALMAN}", eps_source=float(eps))
    return reg


#: Every fetchable asset by name.
REGISTRY: dict[str, Asset] = _build_registry()
#: Names that stand for several assets in :func:`expand`.
GROUPS: dict[str, tuple[str, ...]] = {
    "robust-l2": tuple(f"robust-l2-eps{e}" for e in ROBUST_EPS),
    "sources": ("imagenet",) + tuple(f"robust-l2-eps{e}" for e in ROBUST_EPS),
    "all": tuple(REGISTRY),
}
_INHOUSE = re.compile(r"^inhouse-(?:(?P<arch>[a-z0-9_]+)-)?eps(?P<eps>[0-9]*\.?[0-9]+)$")


def names(kind: str | None = None) -> list[str]:
    """Registry names (of one ``kind``), in registry order; in-house sources are patterns, not listed."""
    return [n for n, a in REGISTRY.items() if kind is None or a.kind == kind]


def get(name: str) -> Asset:
    """The registry entry of ``name`` (also ``inhouse-eps{E}`` / ``inhouse-{arch}-eps{E}``)."""
    if name in REGISTRY:
        return REGISTRY[name]
    m = _INHOUSE.match(name)
    if m:
        from training.sources import SOURCE_FILE

        arch, eps = m.group("arch") or "resnet18", float(m.group("eps"))
        return Asset(name, "source", SOURCE_FILE.format(arch=arch, eps=eps), "", None, "project",
                     note="in-house source model made by `python -m training pretrain`",
                     eps_source=eps, extra={"arch": arch})
    raise AssetError(f"unknown asset {name!r}; known: {', '.join(REGISTRY)}, groups {', '.join(GROUPS)}, "
                     "and in-house sources inhouse-eps<E> / inhouse-<arch>-eps<E>")


def expand(requested: list[str] | tuple[str, ...]) -> list[str]:
    """Names with groups (:data:`GROUPS`) expanded, duplicates dropped, order kept; checks each name."""
    out: list[str] = []
    for name in requested:
        for n in GROUPS.get(name, (name,)):
            get(n)
            if n not in out:
                out.append(n)
    return out


def asset_path(name: str, directory: str | os.PathLike) -> str:
    """Where asset ``name`` lives in ``directory`` (whether it exists or not)."""
    return os.path.join(os.fspath(directory), get(name).filename)


def fetch_command(name: str, directory: str | os.PathLike) -> str:
    """The command that downloads ``name`` into ``directory``."""
    return f"python -m training fetch {name} --dir {os.fspath(directory)}"


def resolve(name: str, directory: str | os.PathLike) -> str:
    """Path of asset ``name`` in ``directory``; raises :class:`MissingAsset` if it is not there.

    A file asset must be a file; a Zenodo asset a non-empty folder. The error names the file, where
    to get it and the fetch command (for an in-house source: the pretrain command).
    """
    asset = get(name)
    path = asset_path(name, directory)
    present = os.path.isdir(path) and any(os.scandir(path)) if asset.fmt == "zenodo" else os.path.isfile(path)
    if present:
        return path
    if not asset.url_key:
        raise MissingAsset(f"{path}: {name} not found (in-house source model); make it with "
                           f"`python -m training pretrain --eps {asset.eps_source:g} --out {os.fspath(directory)}`")
    what = "folder" if asset.fmt == "zenodo" else "file"
    where = (f"Zenodo record {asset.zenodo_record} (https://zenodo.org/records/{asset.zenodo_record})"
             if asset.fmt == "zenodo" else asset.url())
    raise MissingAsset(f"{path}: {name} not found ({what} {asset.filename}). Get it from {where}, "
                       f"or run `{fetch_command(name, directory)}`")


# --------------------------------------------------------------------------------------------
# Hashes
# --------------------------------------------------------------------------------------------


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file (read in chunks)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def check_digest(path: str, digest: str, expected: str, algorithm: str = "SHA-256") -> None:
    """Raise :class:`AssetError` naming ``path`` unless ``digest`` starts with ``expected``."""
    if not digest.lower().startswith(expected.lower()):
        raise AssetError(f"{path}: {algorithm} {digest} does not match the expected {expected}"
                         f"{'...' if len(expected) < len(digest) else ''} (corrupt or a different file; "
                         "delete it and fetch it again)")


def verify(name: str, path: str | os.PathLike | None = None, record: bool = True) -> str | None:
    """Check asset ``name``'s file at ``path``; return its SHA-256 (``None`` for a Zenodo folder).

    * published hash (or prefix): the file's SHA-256 must start with it;
    * no published hash: compared with ``FILE.sha256`` if that exists, else (``record``) written
      there (trust on first use);
    * Zenodo folder: every file listed in its ``.fetched.json`` (written by ``training fetch``) that
      is still there must have the MD5 Zenodo gave; a folder unpacked by hand is accepted as is.

    Raises :class:`AssetError` naming the file on a mismatch, :class:`MissingAsset` if it is missing.
    """
    asset = get(name)
    path = os.fspath(path) if path is not None else asset.filename
    if asset.fmt == "zenodo":
        _verify_zenodo_folder(path)
        return None
    if not os.path.isfile(path):
        raise MissingAsset(f"{path}: {name} not found")
    digest = file_digest(path)
    if asset.sha256:
        check_digest(path, digest, asset.sha256)
        return digest
    sidecar = path + HASH_SUFFIX
    if os.path.isfile(sidecar):
        with open(sidecar, encoding="utf-8") as f:
            recorded = (f.read().split() or [""])[0]
        if not re.fullmatch(r"[0-9a-fA-F]{64}", recorded):
            raise AssetError(f"{sidecar}: not a SHA-256 record (64 hex digits); delete it to record a new one")
        check_digest(path, digest, recorded)
    elif record:
        atomic_write(sidecar, lambda f: f.write(f"{digest}  {os.path.basename(path)}\n"))
    return digest


def _verify_zenodo_folder(folder: str) -> None:
    if not os.path.isdir(folder):
        raise MissingAsset(f"{folder}: folder not found")
    state = os.path.join(folder, FETCHED_FILE)
    if not os.path.isfile(state):
        return
    with open(state, encoding="utf-8") as f:
        fetched = json.load(f)
    for key, info in fetched.get("files", {}).items():
        path = os.path.join(folder, key)
        if os.path.isfile(path) and info.get("md5"):
            check_digest(path, file_digest(path, "md5"), info["md5"], "MD5")


def identity(name: str, path: str | os.PathLike) -> dict[str, Any]:
    """What a run records about the asset it used: name, file name, SHA-256, format, eps_source."""
    asset = get(name)
    path = os.fspath(path)
    return {"name": name, "file": os.path.basename(path), "sha256": verify(name, path),
            "format": detect_format(path) if asset.kind == "source" else asset.fmt,
            "eps_source": asset.eps_source}


def paper_source_name(eps_source: float) -> str:
    """The paper's source model for ``eps_source``: ``imagenet`` (torchvision, for eps 0: ST->FT,
    ST->AFT) or ``robust-l2-eps{eps:g}`` (Salman et al., AT->FT, AT->AFT)."""
    if float(eps_source) == 0.0:
        return "imagenet"
    name = f"robust-l2-eps{float(eps_source):g}"
    if name not in REGISTRY:
        raise AssetError(f"no published robust ResNet-18 at eps {eps_source:g}; "
                         f"Salman et al. give eps {', '.join(ROBUST_EPS)}")
    return name


def source_spec(name: str, directory: str | os.PathLike, arch: str = "resnet18", trust_pickle: bool = False):
    """A :class:`training.sources.SourceSpec` for source asset ``name`` in ``directory``: resolved
    (:class:`MissingAsset` otherwise), verified, its format detected, its name and SHA-256 filled."""
    from training.sources import SourceSpec

    asset = get(name)
    if asset.kind != "source":
        raise AssetError(f"{name} is a {asset.kind}, not a source model")
    path = resolve(name, directory)
    # in-house files are remade by `training pretrain`: hashed for the run's identity, never pinned
    digest = verify(name, path) if asset.url_key else file_digest(path)
    return SourceSpec(path=path, arch=asset.extra.get("arch", arch), eps_source=float(asset.eps_source or 0.0),
                      fmt=detect_format(path), trust_pickle=trust_pickle, name=name, sha256=digest or "")


#: Values of the preset field ``sources``: which source model a transfer run takes.
SOURCE_SETS: tuple[str, ...] = ("paper", "inhouse")


def inhouse_name(eps_source: float, arch: str = "resnet18") -> str:
    """The in-house source name for ``arch`` at ``eps_source`` (``inhouse-eps0.05``, ``inhouse-resnet50-eps1``)."""
    return f"inhouse-{'' if arch == 'resnet18' else arch + '-'}eps{float(eps_source):g}"


def source_name(source_set: str, eps_source: float, arch: str = "resnet18") -> str:
    """The registry name a transfer run takes: ``paper`` -> :func:`paper_source_name` (``imagenet``
    or ``robust-l2-eps{E}``, ResNet-18 only), ``inhouse`` -> :func:`inhouse_name`."""
    if source_set == "paper":
        if arch != "resnet18":
            raise AssetError(f"the paper's source models are ResNet-18s; arch {arch} needs sources=inhouse")
        return paper_source_name(eps_source)
    if source_set == "inhouse":
        return inhouse_name(eps_source, arch)
    raise AssetError(f"unknown source set {source_set!r}; choose from {', '.join(SOURCE_SETS)}")


def name_for_file(path: str | os.PathLike) -> str:
    """The registry name whose file is ``path``'s file name (an in-house ``source_<arch>_eps<E>.pt``
    included), else the file name itself."""
    base = os.path.basename(os.fspath(path))
    for name, asset in REGISTRY.items():
        if asset.kind == "source" and asset.filename == base:
            return name
    m = re.match(r"^source_([a-z0-9_]+)_eps([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\.pt$", base)
    return inhouse_name(float(m.group(2)), m.group(1)) if m else base


def spec_for_file(path: str | os.PathLike, arch: str = "resnet18", eps_source: float = 0.0, fmt: str = "auto",
                  trust_pickle: bool = False):
    """A :class:`training.sources.SourceSpec` for a source file given by path (``train --source FILE``):
    named by :func:`name_for_file` (a registry file is verified like :func:`source_spec` does), its
    SHA-256 computed and, with ``fmt="auto"``, its format detected."""
    from training.sources import SourceSpec

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingAsset(f"{path}: source model file not found")
    name = name_for_file(path)
    digest = verify(name, path) if name in REGISTRY else file_digest(path)
    fmt = detect_format(path) if fmt == "auto" else fmt
    return SourceSpec(path=path, arch=arch, eps_source=float(eps_source), fmt=fmt, trust_pickle=trust_pickle,
                      name=name, sha256=digest or "")


# --------------------------------------------------------------------------------------------
# Formats
# --------------------------------------------------------------------------------------------


def detect_format(path: str | os.PathLike, trust_pickle: bool = False) -> str:
    """``"torchvision"``, ``"robustness"`` or ``"project"``: the format of source weights at ``path``.

    Read with :func:`training.sources.torch_load` (``weights_only=True``). A file holding pickled
    objects that ``weights_only`` refuses is, unless ``trust_pickle``, recognised from the strings
    of its pickle (scanned with :mod:`pickletools`; nothing is unpickled). Raises
    :class:`CheckpointError` naming the file if it is none of these.
    """
    from training import sources

    path = os.fspath(path)
    try:
        obj = sources.torch_load(path, trust_pickle)
    except CheckpointError as exc:
        if "pickled Python objects" not in str(exc):
            raise
        return _format_from_strings(path, _pickle_strings(path))
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        return "project"
    sd = sources.extract_state_dict(path, obj)
    return "robustness" if sources.looks_robustness(sd) else "torchvision"


def _format_from_strings(path: str, strings: set[str]) -> str:
    if CHECKPOINT_FORMAT in strings:
        return "project"
    if any(re.match(r"^(module\.)?model\.", s) for s in strings):
        return "robustness"
    if "conv1.weight" in strings or "module.conv1.weight" in strings:
        return "torchvision"
    raise CheckpointError(f"{path}: neither a torchvision, robustness nor project checkpoint "
                          "(no conv1.weight / module.model.* keys)")


def _pickle_strings(path: str, limit: int = 200_000) -> set[str]:
    """String constants of the pickle(s) in a torch file (zip or legacy format), without unpickling."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            member = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
            if member is None:
                raise CheckpointError(f"{path}: a zip file without data.pkl, not a torch checkpoint")
            data = z.read(member)
    else:
        with open(path, "rb") as f:
            data = f.read(64 << 20)  # the legacy format's pickles come before the tensor data
    out: set[str] = set()
    pos = 0
    for _ in range(5):  # legacy format: magic number, protocol, sys_info, the object, storage keys
        try:
            for op, arg, at in pickletools.genops(data[pos:]):
                if isinstance(arg, str) and len(out) < limit:
                    out.add(arg)
                if op.name == "STOP":
                    pos += at + 1
                    break
            else:
                break
        except Exception:  # truncated or not a pickle: keep what was read
            break
    return out
