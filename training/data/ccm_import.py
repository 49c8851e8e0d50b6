"""Import the released C-CCM (Zenodo record 4642577) as a crop manifest (:mod:`training.data.ccm`).

The release's exact layout could not be inspected when this was written, so the importer reads the
CCM naming conventions and fails loudly, with the first paths it could not read, instead of
guessing. What it expects, for every image (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``) under ``root``
(a single wrapper folder such as ``C-CCM/`` is stepped into):

* **container** (required): a folder named ``C1`` .. ``C8`` (also ``c3``, ``container_3``,
  ``container3``, ``cont-3``) anywhere on the path, a bare number ``1`` .. ``8`` as the first folder
  under the root, a ``C3`` token in the file name (``C3_000123.png``), or an annotation column.
  Ids are mapped with ``container_map`` first (e.g. ``{"10": "C7"}`` if the release used CCM's own
  container numbers); an id outside C1..C8 is an error, never silently trained in every split;
* **filling level** (required): a CCM recording name ``sS_fiI_fuU_bB_lL[_cC]`` in a folder or file
  name (``fu`` 0 empty, 1 50 %, 2 90 %; ``fi`` 0 none, 1 pasta, 2 rice, 3 water; ``c`` the camera
  view), or a folder / file-name token ``empty``, ``half``, ``full``, ``50``, ``90``, ``0%``,
  ``50%``, ``90%``, ``opaque`` or ``unknown``, or an annotation column. ``opaque`` / ``unknown`` is
  accepted for the opaque containers C1, C2 only (their crops are labelled ``unknown`` anyway);
* optional: filling type (``fi`` or a token ``none`` / ``pasta`` / ``rice`` / ``water``), hand
  occlusion (a token ``occluded`` / ``hand`` = 1, ``unoccluded`` / ``no_hand`` = 0), camera view
  (``c`` of the recording name, or a folder ``view2`` / ``camera2`` / ``cam2``). Missing optional
  values are written as filling ``none`` (``empty`` level) or ``none`` with a note, occlusion 0 and
  view ``unknown``, and the number of crops concerned is reported.

Annotation files: every ``*.csv`` under ``root`` with an image column (``image``, ``file``,
``filename``, ``path``, ``crop``) is read; its columns ``container`` / ``container id``,
``filling type`` / ``filling``, ``filling level`` / ``level``, ``occlusion`` / ``hand occlusion``,
``transparency``, ``view`` / ``camera`` override nothing: a value that disagrees with the path is an
error. Levels ``0`` / ``1`` / ``2`` are CCM codes, ``50`` / ``90`` percent; filling types ``0`` .. ``3``
are CCM codes. CSVs without an image column (e.g. CCM's per-recording ``ccm_train_annotation.csv``)
are listed and ignored.

Transparency comes from the container (C1, C2 opaque; the others transparent) unless a column gives
it. Any image whose container or level cannot be read, or whose sources disagree, stops the import:
:class:`CCMLayoutError` lists the first 10 paths with the reason and the total count.

Counts: the rows are counted with :func:`training.data.ccm.counts` and shown beside the published
ones (:data:`CCM_CONTAINER_COUNTS`, :data:`CCM_CLASS_COUNTS`; the paper's ``opaque`` is ``unknown``).
A mismatch stops the import (:class:`CountMismatchError`) unless ``force``; ``dry_run`` prints the
table and writes nothing.

CLI: ``python -m training.data.ccm_import ROOT --out MANIFEST [--dry-run] [--force] [--container-map 10=C7]``.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from fillcls.world.containers import CCM_CLASS_COUNTS, CCM_CONTAINER_COUNTS, CONTAINER_NAMES, OPAQUE

from ..command import subcommand
from .ccm import counts, format_counts, write_manifest

IMAGE_EXTS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp")
#: CCM recording name; ``c`` (camera view) is optional.
CCM_NAME = re.compile(r"(?<![a-z0-9])s(?P<s>\d+)_fi(?P<fi>\d+)_fu(?P<fu>\d+)_b(?P<b>\d+)_l(?P<l>\d+)"
                      r"(?:_c(?P<c>\d+))?(?![0-9])", re.I)
CCM_FILLING_TYPES: dict[str, str] = {"0": "none", "1": "pasta", "2": "rice", "3": "water"}
CCM_FILLING_LEVELS: dict[str, str] = {"0": "empty", "1": "half", "2": "full"}
_CONTAINER = re.compile(r"^(?:c|container|cont)[ _-]?0*(\d+)$", re.I)
_VIEW = re.compile(r"^(?:view|camera|cam)[ _-]?(\d+)$", re.I)
_LEVEL_WORDS: dict[str, str] = {"empty": "empty", "half": "half", "full": "full", "50": "half", "90": "full",
                                "0%": "empty", "50%": "half", "90%": "full",
                                "opaque": "unknown", "unknown": "unknown"}
_FILLING_WORDS = ("none", "pasta", "rice", "water")
_OCCLUSION_WORDS: dict[str, float] = {
    "occluded": 1.0, "occlusion": 1.0, "hand": 1.0, "with_hand": 1.0, "handheld": 1.0,
    "unoccluded": 0.0, "not_occluded": 0.0, "no_occlusion": 0.0, "no_hand": 0.0, "nohand": 0.0,
    "without_hand": 0.0}
_COLUMNS: dict[str, tuple[str, ...]] = {
    "image": ("image", "file", "filename", "file name", "path", "crop", "image path", "img"),
    "container": ("container", "container id", "container_id"),
    "filling": ("filling type", "filling_type", "filling"),
    "level": ("filling level", "filling_level", "level"),
    "occlusion": ("occlusion", "hand occlusion", "hand_occlusion", "occluded"),
    "transparency": ("transparency",),
    "view": ("view", "camera", "camera view", "camera_view"),
}
MAX_SHOWN = 10


class CCMLayoutError(ValueError):
    """Images whose labels could not be read; ``.bad`` holds every ``(path, reason)``."""

    def __init__(self, root: str, bad: list[tuple[str, str]], total: int):
        self.root, self.bad = root, bad
        shown = "\n  ".join(f"{p}: {why}" for p, why in bad[:MAX_SHOWN])
        more = f"\n  ... and {len(bad) - MAX_SHOWN} more" if len(bad) > MAX_SHOWN else ""
        super().__init__(f"{root}: {len(bad)} problem(s) among {total} images (expected layout: "
                         f"docs/data.md, 'Importing the real C-CCM'); first ones:\n  {shown}{more}")


class CountMismatchError(ValueError):
    """The imported counts differ from the published C-CCM counts (``force`` imports anyway)."""


@dataclass
class ImportResult:
    """What :func:`import_ccm` found: manifest rows, counts, the table and the differences."""

    rows: list[dict[str, Any]]
    counts: dict[str, Any]
    table: str
    mismatches: list[str]
    notes: list[str] = field(default_factory=list)
    manifest: str | None = None


# --------------------------------------------------------------------------------------------
# Parsing one path
# --------------------------------------------------------------------------------------------


def _put(found: dict[str, set], key: str, value: Any) -> None:
    found.setdefault(key, set()).add(value)


def _container_id(text: str, container_map: Mapping[str, str]) -> str:
    raw = str(text).strip()
    m = _CONTAINER.match(raw) or re.fullmatch(r"0*(\d+)", raw)
    if not m:
        return f"?{raw}"
    cid = f"C{int(m.group(1))}"
    return container_map.get(raw) or container_map.get(m.group(1)) or container_map.get(cid) or cid


def _parse_ccm_name(text: str, found: dict[str, set]) -> str:
    """Record the fields of every CCM recording name in ``text``; return ``text`` without them."""
    for m in CCM_NAME.finditer(text):
        fi, fu = m.group("fi"), m.group("fu")
        _put(found, "filling", CCM_FILLING_TYPES.get(fi, f"?fi{fi}"))
        _put(found, "level", CCM_FILLING_LEVELS.get(fu, f"?fu{fu}"))
        if m.group("c"):
            _put(found, "view", str(int(m.group("c"))))
    return CCM_NAME.sub(" ", text)


def _parse_token(tok: str, found: dict[str, set], container_map: Mapping[str, str], whole: bool) -> bool:
    """Record what one folder name or name token says; False if it says nothing known."""
    low = tok.lower()
    if _CONTAINER.match(tok):
        _put(found, "container", _container_id(tok, container_map))
    elif low in _LEVEL_WORDS and (whole or not low.isdigit()):
        _put(found, "level", _LEVEL_WORDS[low])
    elif low in _FILLING_WORDS:
        _put(found, "filling", low)
    elif low in _OCCLUSION_WORDS:
        _put(found, "occlusion", _OCCLUSION_WORDS[low])
    elif _VIEW.match(tok):
        _put(found, "view", str(int(_VIEW.match(tok).group(1))))
    else:
        return False
    return True


def _parse_words(text: str, found: dict[str, set], container_map: Mapping[str, str]) -> None:
    """CCM recording names, then tokens split at ``_ - . space`` (two-token words such as
    ``no_hand`` / ``container_3`` first); unknown tokens (frame numbers ...) are ignored."""
    toks = [t for t in re.split(r"[_\-\s.]+", _parse_ccm_name(text, found)) if t]
    i = 0
    while i < len(toks):
        if i + 1 < len(toks) and _parse_token(f"{toks[i]}_{toks[i + 1]}", found, container_map, False):
            i += 2
            continue
        _parse_token(toks[i], found, container_map, False)
        i += 1


def parse_path(rel: str, container_map: Mapping[str, str] | None = None) -> dict[str, set]:
    """Every value the path ``rel`` (relative to the data root) gives for each field, as sets.

    A folder is read whole first (``C3``, ``container_3``, ``no_hand``, ``50``, ``view2``), a bare
    number as the first folder is a container id, otherwise its words are read; the file name's
    words are read too.
    """
    container_map = container_map or {}
    found: dict[str, set] = {}
    parts = rel.replace("\\", "/").split("/")
    for i, folder in enumerate(parts[:-1]):
        if i == 0 and re.fullmatch(r"\d+", folder):
            _put(found, "container", _container_id(folder, container_map))
        elif not _parse_token(folder, found, container_map, whole=True):
            _parse_words(folder, found, container_map)
    _parse_words(os.path.splitext(parts[-1])[0], found, container_map)
    return found


# --------------------------------------------------------------------------------------------
# Annotation files
# --------------------------------------------------------------------------------------------


def _norm(name: str) -> str:
    return re.sub(r"[\s_]+", " ", name.strip().lower())


def _csv_level(value: str) -> str:
    v = value.strip().lower()
    return {"0": "empty", "1": "half", "2": "full"}.get(v) or _LEVEL_WORDS.get(v) or f"?{value}"


def _csv_filling(value: str) -> str:
    v = value.strip().lower()
    return CCM_FILLING_TYPES.get(v) or (v if v in _FILLING_WORDS else f"?{value}")


def _csv_occlusion(value: str) -> float | str:
    v = value.strip().lower()
    if v in _OCCLUSION_WORDS:
        return _OCCLUSION_WORDS[v]
    try:
        f = float({"true": "1", "yes": "1", "false": "0", "no": "0"}.get(v, v))
    except ValueError:
        return f"?{value}"
    return f if 0.0 <= f <= 1.0 else f"?{value}"


def _csv_row_values(row: Mapping[str, str], cols: Mapping[str, str], container_map) -> dict[str, set]:
    parse: dict[str, Callable[[str], Any]] = {
        "container": lambda v: _container_id(v, container_map), "filling": _csv_filling, "level": _csv_level,
        "occlusion": _csv_occlusion, "transparency": lambda v: v.strip().lower(), "view": lambda v: v.strip()}
    found: dict[str, set] = {}
    for key, col in cols.items():
        value = (row.get(col) or "").strip()
        if key != "image" and value:
            _put(found, key, parse[key](value))
    return found


def read_annotations(root: str, images: Mapping[str, str], container_map, bad: list, notes: list
                     ) -> dict[str, dict[str, set]]:
    """``{image abs path: values}`` from every CSV under ``root`` with an image column."""
    by_name: dict[str, list[str]] = {}
    for path in images.values():
        by_name.setdefault(os.path.basename(path), []).append(path)
    out: dict[str, dict[str, set]] = {}
    for csv_path in sorted(_walk(root, (".csv",))):
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = {_norm(h): h for h in (reader.fieldnames or [])}
            cols = {k: next((header[c] for c in names if c in header), None) for k, names in _COLUMNS.items()}
            cols = {k: v for k, v in cols.items() if v}
            if "image" not in cols:
                notes.append(f"ignored {csv_path} (no image column)")
                continue
            for rowno, row in enumerate(reader, start=2):
                ref = (row.get(cols["image"]) or "").strip()
                where = f"{csv_path} row {rowno}"
                cands = [p for p in (os.path.join(os.path.dirname(csv_path), ref), os.path.join(root, ref))
                         if os.path.isfile(p)] or by_name.get(os.path.basename(ref), [])
                if len({os.path.realpath(c) for c in cands}) != 1:
                    bad.append((where, f"image {ref!r} {'not found' if not cands else 'is ambiguous'}"))
                    continue
                path = os.path.abspath(cands[0])
                if path in out:
                    bad.append((where, f"image {ref!r} annotated twice"))
                    continue
                out[path] = _csv_row_values(row, cols, container_map)
    return out


# --------------------------------------------------------------------------------------------
# Building the manifest rows
# --------------------------------------------------------------------------------------------


def _walk(root: str, exts: tuple[str, ...]) -> Iterable[str]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.lower().endswith(exts) and not name.startswith("."):
                yield os.path.join(folder, name)


def data_root(root: str) -> str:
    """``root``, or the folder inside it while it holds a single folder, nothing else of use, and
    that folder's name says nothing (a wrapper such as ``C-CCM/``, not ``C3/`` or ``1/``)."""
    while True:
        with os.scandir(root) as it:
            entries = [e for e in it if not e.name.startswith(".")]
        dirs = [e for e in entries if e.is_dir()]
        useful = [e for e in entries if e.is_file() and e.name.lower().endswith(IMAGE_EXTS + (".csv",))]
        if len(dirs) != 1 or useful:
            return root
        name = dirs[0].name
        if re.fullmatch(r"\d+", name) or CCM_NAME.search(name) or _parse_token(name, {}, {}, True):
            return root
        root = dirs[0].path


def _one(values: dict[str, set], key: str) -> tuple[Any, str | None]:
    vals = values.get(key, set())
    bad = sorted(str(v) for v in vals if isinstance(v, str) and v.startswith("?"))
    if bad:
        return None, f"cannot read {key} {bad[0][1:]!r}"
    if len(vals) > 1:
        return None, f"conflicting {key}: {' / '.join(sorted(map(str, vals)))}"
    return (next(iter(vals)) if vals else None), None


def make_row(values: dict[str, set], defaults: dict[str, int]) -> tuple[dict[str, Any] | None, str | None]:
    """A manifest row from the parsed values, or ``(None, reason)``."""
    got = {}
    for key in ("container", "level", "filling", "occlusion", "transparency", "view"):
        got[key], why = _one(values, key)
        if why:
            return None, why
    cid, level = got["container"], got["level"]
    if cid is None:
        return None, "no container id (folder C1..C8, 1..8, or a column)"
    if cid not in CONTAINER_NAMES:
        return None, f"container {cid} outside C1..C8 (map it with container_map / --container-map)"
    if level is None:
        return None, "no filling level (sS_fiI_fuU_bB_lL name, empty/half/full/opaque folder, or a column)"
    transparency = got["transparency"] or ("opaque" if cid in OPAQUE else "transparent")
    if transparency not in ("transparent", "translucent", "opaque"):
        return None, f"cannot read transparency {transparency!r}"
    if level == "unknown" and transparency == "transparent":
        return None, f"level opaque/unknown for the transparent container {cid}"
    filling = got["filling"]
    if filling is None:
        filling = "none"
        if level not in ("empty",):
            defaults["filling"] += 1
    elif level == "empty" and filling != "none":
        return None, f"filling {filling} with level empty"
    if got["occlusion"] is None:
        defaults["occlusion"] += 1
    if got["view"] is None:
        defaults["view"] += 1
    return {"container": cid, "filling": filling, "level": level, "occlusion": got["occlusion"] or 0.0,
            "transparency": transparency, "view": got["view"] or "unknown"}, None


def collect_rows(root: str, out_dir: str, container_map: Mapping[str, str] | None = None
                 ) -> tuple[list[dict[str, Any]], list[str]]:
    """Manifest rows for every image under ``root`` (paths relative to ``out_dir``) and notes.

    Raises :class:`CCMLayoutError` listing the images that could not be labelled.
    """
    container_map = {str(k).strip(): str(v).strip().upper() for k, v in (container_map or {}).items()}
    top = data_root(os.path.abspath(root))
    images = {os.path.relpath(p, top): os.path.abspath(p) for p in _walk(top, IMAGE_EXTS)}
    if not images:
        raise CCMLayoutError(root, [(root, f"no images ({', '.join(IMAGE_EXTS)}) found")], 0)
    bad: list[tuple[str, str]] = []
    notes: list[str] = []
    annotations = read_annotations(top, images, container_map, bad, notes)
    defaults = {"filling": 0, "occlusion": 0, "view": 0}
    rows = []
    for rel, path in images.items():
        values = parse_path(rel, container_map)
        for key, vals in annotations.get(path, {}).items():
            values.setdefault(key, set()).update(vals)
        row, why = make_row(values, defaults)
        if why:
            bad.append((rel, why))
            continue
        row["image"] = os.path.relpath(path, out_dir)
        rows.append(row)
    if bad:
        raise CCMLayoutError(top, bad, len(images))
    notes += [f"{n} crops without {k} (written as {dict(filling='none', occlusion='0', view='unknown')[k]})"
              for k, n in defaults.items() if n]
    rows.sort(key=lambda r: (int(r["container"][1:]), r["image"]))
    return rows, notes


def compare_counts(result: Mapping[str, Any], reference: tuple[Mapping[str, int], Mapping[str, int]] | None = None
                   ) -> list[str]:
    """Lines naming every container / class whose count differs from the reference (published) counts."""
    ref_containers, ref_classes = reference or (CCM_CONTAINER_COUNTS, CCM_CLASS_COUNTS)
    out = []
    for c in sorted(set(ref_containers) | set(result["containers"]), key=lambda c: int(c[1:])):
        got, want = result["containers"].get(c, 0), ref_containers.get(c, 0)
        if got != want:
            out.append(f"container {c}: {got} crops, published {want} ({got - want:+d})")
    for k in sorted(set(ref_classes) | set(result["classes"])):
        got, want = result["classes"].get(k, 0), ref_classes.get(k, 0)
        if got != want:
            name = "unknown (opaque)" if k == "unknown" else k
            out.append(f"class {name}: {got} crops, published {want} ({got - want:+d})")
    return out


def import_ccm(root: str | os.PathLike, out_manifest: str | os.PathLike, dry_run: bool = False,
               force: bool = False, container_map: Mapping[str, str] | None = None,
               reference: tuple[Mapping[str, int], Mapping[str, int]] | None = None,
               log: Callable[[str], None] = print) -> ImportResult:
    """Write the manifest of the C-CCM release unpacked at ``root`` to ``out_manifest``.

    Prints (``log``) the count table beside the published counts (``reference``, default C-CCM's),
    the differences and notes. Raises :class:`CCMLayoutError` if any image cannot be labelled and
    :class:`CountMismatchError` on a count mismatch unless ``force``; ``dry_run`` writes nothing.
    """
    root, out_manifest = os.fspath(root), os.path.abspath(os.fspath(out_manifest))
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: C-CCM folder not found")
    rows, notes = collect_rows(root, os.path.dirname(out_manifest), container_map)
    with tempfile.TemporaryDirectory() as tmp:
        result = counts(write_manifest(os.path.join(tmp, "manifest.csv"), rows))
    mismatches = compare_counts(result, reference)
    table = format_counts(result)
    log(table)
    for line in notes:
        log(f"note: {line}")
    log("\n".join(["counts differ from the published C-CCM counts:"] + [f"  {m}" for m in mismatches])
        if mismatches else "counts match the published C-CCM counts")
    out = ImportResult(rows, result, table, mismatches, notes)
    if dry_run:
        return out
    if mismatches and not force:
        raise CountMismatchError(f"{root}: {len(mismatches)} count(s) differ from the published C-CCM counts "
                                 f"({mismatches[0]}, ...); check the layout, or import anyway with --force")
    os.makedirs(os.path.dirname(out_manifest), exist_ok=True)
    out.manifest = write_manifest(out_manifest, rows)
    log(f"wrote {out.manifest} ({len(rows)} crops)")
    return out


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def parse_container_map(text: str | None) -> dict[str, str]:
    """``"10=C7,11=C8"`` -> ``{"10": "C7", "11": "C8"}``."""
    out = {}
    for item in (text or "").split(","):
        if item.strip():
            key, sep, value = item.partition("=")
            if not sep or not re.fullmatch(r"C\d+", value.strip(), re.I):
                raise argparse.ArgumentTypeError(f"--container-map: expected ID=C<n>, got {item!r}")
            out[key.strip()] = value.strip().upper()
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", help="the unpacked C-CCM release (e.g. assets/c-ccm)")
    p.add_argument("--out", required=True, metavar="MANIFEST", help="manifest to write (manifest.csv)")
    p.add_argument("--dry-run", action="store_true", help="print the counts beside C-CCM's, write nothing")
    p.add_argument("--force", action="store_true", help="write the manifest even if the counts differ")
    p.add_argument("--container-map", type=parse_container_map, default={}, metavar="ID=C<n>,...",
                   help="map the release's container ids to C1..C8, e.g. 10=C7,11=C8")


def run(args: argparse.Namespace) -> int:
    """Run the import; errors become a message on stderr and exit code 1."""
    try:
        res = import_ccm(args.root, args.out, args.dry_run, args.force, args.container_map)
    except (CCMLayoutError, CountMismatchError, OSError) as exc:
        print(f"import-ccm: {exc}", file=sys.stderr)
        return 1
    return 1 if args.dry_run and res.mismatches and not args.force else 0


register, main = subcommand("import-ccm", "write the manifest of the unpacked C-CCM release", "training.data.ccm_import",
                            __doc__, add_arguments, run,
                            description="Label every crop of the C-CCM release from its folders, file names and "
                                        "annotation CSVs; see docs/data.md.")


if __name__ == "__main__":
    sys.exit(main())
