"""Command line of the target-domain data: ``python -m training.data COMMAND --help``.

Commands:

* ``generate``: write procedural (or ``--renderer pbr``: path-traced) crops (PNG) and their ``manifest.csv``;
* ``frames``: write procedural camera frames, instance masks and ``frames.jsonl``;
* ``merge``: one manifest listing the crops of several (e.g. a procedural + path-traced mix);
* ``counts``: print the per-container / per-class counts of a manifest beside C-CCM's;
* ``contact-sheet``: save a grid of crops (rows C1..C8, columns fill levels).
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def _ids(text: str | None):
    if not text:
        return None
    return [c.strip().upper() for c in text.split(",") if c.strip()]


def _add_out_n_seed(p, what: str) -> None:
    """--out, --n and --seed, shared by the commands that write data."""
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--n", type=int, required=True, help=f"number of {what}")
    p.add_argument("--seed", type=int, default=0, help="data seed (default 0)")


def _add_generate(sub) -> None:
    g = sub.add_parser("generate", help="write procedural crops + manifest.csv",
                       description="Render N procedural container crops (C-CCM proportions) and write "
                                   "them as DIR/crops/NNNNNN.png with DIR/manifest.csv (see docs/data.md). "
                                   "Same seed, same files.")
    _add_out_n_seed(g, "crops")
    g.add_argument("--size", type=int, default=None,
                   help="resize crops to SIZE x SIZE px (default: keep each crop at its native side)")
    g.add_argument("--containers", default=None,
                   help="comma-separated container ids to generate (default: C1..C8), e.g. C6,C7,C8")
    g.add_argument("--hand-prob", type=float, default=None,
                   help="fraction of crops with a hand holding the container (default 0.3)")
    g.add_argument("--workers", type=int, default=None,
                   help="processes used with --size (default: up to 2 for large N)")
    g.add_argument("--renderer", choices=("procedural", "pbr"), default="procedural",
                   help="procedural (the 2-D renderer, default) or pbr (Mitsuba 3 path tracing, needs --size; "
                        "uses the train photographs of `make photos` as backdrops when present)")
    g.add_argument("--spp", type=int, default=16, help="pbr: samples per pixel (default 16)")
    g.add_argument("--cache-dir", default="runs/cache", help="pbr: render cache (an interrupted run resumes)")


def _add_frames(sub) -> None:
    f = sub.add_parser("frames", help="write procedural camera frames + masks",
                       description="Render N camera frames with their containers' instance masks: "
                                   "DIR/frames/NNNNNN.png, DIR/masks/NNNNNN.png (0 = background, k = "
                                   "k-th container of the frame's annotations) and DIR/frames.jsonl.")
    _add_out_n_seed(f, "frames")
    f.add_argument("--width", type=int, default=640, help="frame width (default 640)")
    f.add_argument("--height", type=int, default=480, help="frame height (default 480)")
    f.add_argument("--containers", default=None, help="comma-separated container ids allowed (default all)")
    f.add_argument("--split", default=None, help="use the test containers of split S1 / S2 / S3")
    f.add_argument("--n-containers", type=int, default=1, help="containers per frame (default 1)")


def _add_merge(sub) -> None:
    m = sub.add_parser("merge", help="one manifest listing the crops of several",
                       description="Write OUT listing every crop of the given manifests (image paths made "
                                   "absolute; nothing is copied), e.g. a procedural + path-traced training mix.")
    m.add_argument("out", help="the merged manifest.csv to write")
    m.add_argument("manifests", nargs="+", help="manifest.csv files to merge")


def _add_counts(sub) -> None:
    c = sub.add_parser("counts", help="per-container / per-class counts of a manifest",
                       description="Print the number of crops per container and per class of a manifest "
                                   "(images are not read), with the C-CCM reference numbers beside them.")
    c.add_argument("manifest", help="path of a manifest.csv")
    c.add_argument("--json", action="store_true", help="print the counts as JSON instead of a table")
    c.add_argument("--no-reference", action="store_true", help="leave out the C-CCM reference columns")


def _add_contact_sheet(sub) -> None:
    s = sub.add_parser("contact-sheet", help="save a grid of procedural crops",
                       description="Save a PNG grid of procedural crops: one row per container C1..C8, "
                                   "columns empty / half / full (PER_LEVEL samples each; opaque C1 and C2 "
                                   "are labelled unknown, their hidden content is shown by column).")
    s.add_argument("--out", default="docs/contact_sheet.png", help="PNG path (default docs/contact_sheet.png)")
    s.add_argument("--per-level", type=int, default=3, help="samples per level (default 3)")
    s.add_argument("--tile", type=int, default=112, help="tile size in px (default 112)")
    s.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    s.add_argument("--renderer", choices=("procedural", "pbr"), default="procedural",
                   help="pbr: path-traced crops (Mitsuba 3; tile 96), or with --hands path-traced frames")
    s.add_argument("--hands", type=float, default=0.0,
                   help="pbr: a grid of 6 frames whose containers a hand holds with this probability")
    s.add_argument("--spp", type=int, default=32, help="pbr: samples per pixel (default 32)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m training.data`` (one sub-command per command)."""
    ap = argparse.ArgumentParser(prog="python -m training.data", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_generate(sub)
    _add_frames(sub)
    _add_merge(sub)
    _add_counts(sub)
    _add_contact_sheet(sub)
    return ap


def _generate(args, D) -> int:
    kw = {} if args.hand_prob is None else {"hand_prob": args.hand_prob}
    if args.renderer == "pbr":
        if args.hand_prob is not None or not args.size:
            print("error: --renderer pbr needs --size and has no hands (--hand-prob)", file=sys.stderr)
            return 2
        kw = {"renderer": "pbr", "spp": args.spp, "cache_dir": args.cache_dir}
    t0 = time.time()
    path = D.write_dataset(args.out, args.n, args.seed, size=args.size, containers=_ids(args.containers),
                           workers=args.workers, **kw)
    print(f"wrote {args.n} crops and {path} in {time.time() - t0:.1f} s")
    print(D.format_counts(D.counts(path)))
    return 0


def _frames(args, D) -> int:
    ids = _ids(args.containers)
    if args.split:
        ids = list(D.SPLITS[args.split.upper()])
    path = D.write_frames(args.out, args.n, args.seed, args.width, args.height, ids, args.n_containers)
    print(f"wrote {args.n} frames and {path}")
    return 0


def _merge(args, D) -> int:
    try:
        path = D.merge_manifests(args.out, args.manifests)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    print(D.format_counts(D.counts(path)))
    return 0


def _counts(args, D) -> int:
    try:
        result = D.counts(args.manifest)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.manifest}: {result['total']} crops")
        print(D.format_counts(result, reference=not args.no_reference))
    return 0


def _contact_sheet(args, D) -> int:
    if args.renderer == "pbr":
        from fillcls.world import pbr

        if args.hands > 0:
            pbr.frames_sheet_pbr(args.out, spp=args.spp, seed=args.seed, hands=args.hands)
        else:
            pbr.contact_sheet_pbr(args.out, spp=args.spp, seed=args.seed)
    else:
        D.contact_sheet(args.out, per_level=args.per_level, tile=args.tile, seed=args.seed)
    print(f"wrote {args.out}")
    return 0


_COMMANDS = {"generate": _generate, "frames": _frames, "merge": _merge, "counts": _counts, "contact-sheet": _contact_sheet}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from training import data as D

    return _COMMANDS[args.command](args, D)


if __name__ == "__main__":
    sys.exit(main())
