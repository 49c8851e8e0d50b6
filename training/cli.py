"""Command line of the trainer: ``python -m training <command> ...`` (``--help`` on each).

Commands: ``train`` (one run), ``sweep`` (Fig. 5 sweeps), ``study`` (six strategies x splits +
sweeps + report), ``evaluate``, ``report``, ``export`` (checkpoint for the node), ``presets``.

Every preset value can be overridden with ``--<field> VALUE`` (one option per
:class:`training.config.Preset` field) or ``--set field=value``. Runs land in
``<runs>/<preset>/<split>/<run name>/``; with overrides the preset directory becomes
``<preset>-<hash of the overrides>`` (or ``<preset>-<tag>`` with ``--tag``), so runs of different
settings never mix.

Other modules add commands: :func:`build_parser` imports ``training.pretrain`` and
``training.segtrain`` when they exist and calls their ``register(subparsers)``; they can reuse
:func:`add_preset_options`, :func:`preset_from_args`, :func:`run_root`, :func:`default_source_dir`
and :func:`setup_device`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import json
import os
import sys
from typing import Any, Sequence

from training.config import (NON_RUN_FIELDS, PRESETS, SPLIT_NAMES, STRATEGIES, Preset, cli_overrides,
                             get_preset, get_strategy, preset_diff, resolve_run)

EXTENSIONS: tuple[str, ...] = ("training.pretrain", "training.segtrain")
DEFAULT_RUNS = "runs"


# --------------------------------------------------------------------------------------------
# Shared option helpers (also for the extension modules)
# --------------------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if isinstance(v, dict):
        return ",".join(f"{k}={x:g}" if isinstance(x, float) else f"{k}={x}" for k, x in v.items())
    if isinstance(v, (tuple, list)):
        return ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)
    return str(v)


def add_preset_options(parser: argparse.ArgumentParser, default_preset: str = "cpu") -> None:
    """``--preset``, ``--set`` and one ``--<field>`` option per :class:`Preset` field."""
    parser.add_argument("--preset", choices=list(PRESETS), default=default_preset,
                        help=f"preset of every value below (default {default_preset}; "
                             "`python -m training presets` shows them)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a preset value (repeatable), e.g. --set epochs=5")
    group = parser.add_argument_group(
        "preset values", "override one value of the preset (defaults: paper / cpu / tiny)")
    for f in dataclasses.fields(Preset):
        vals = "; ".join(f"{n}: {_fmt(getattr(p, f.name))}" for n, p in PRESETS.items())
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f"field_{f.name}", default=None,
                           metavar=type(f.default).__name__.upper() if f.default is not dataclasses.MISSING
                           else "VALUE",
                           help=f"{f.metadata.get('help', '')} [{vals}]".replace("%", "%%"))


def preset_from_args(args: argparse.Namespace) -> tuple[str, Preset]:
    """The preset named by ``--preset`` with ``--set`` and ``--<field>`` overrides applied."""
    changes = cli_overrides(args, Preset, "field_")
    try:
        return args.preset, get_preset(args.preset, **changes)
    except ValueError as exc:
        raise SystemExit(f"bad preset value: {exc}") from exc


def overrides(name: str, preset: Preset) -> dict[str, Any]:
    """Values of ``preset`` that differ from the preset ``name`` and change runs' results."""
    base, cur = get_preset(name).to_dict(), preset.to_dict()
    return {k: cur[k] for k in cur if cur[k] != base[k] and k not in NON_RUN_FIELDS}


def run_root(args: argparse.Namespace, name: str, preset: Preset) -> str:
    """``<runs>/<preset>``, ``<runs>/<preset>-<tag>`` or ``<runs>/<preset>-<hash of overrides>``."""
    tag = getattr(args, "tag", None)
    changed = overrides(name, preset)
    if tag:
        leaf = f"{name}-{tag}"
    elif changed:
        leaf = f"{name}-{hashlib.sha1(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:8]}"
    else:
        leaf = name
    return os.path.join(getattr(args, "runs", DEFAULT_RUNS), leaf)


def default_source_dir(runs: str, preset_name: str) -> str:
    """Where ``training pretrain`` puts source models of a preset: ``<runs>/sources/<preset>``."""
    return os.path.join(runs, "sources", preset_name)


def add_common_options(parser: argparse.ArgumentParser, resume: bool = True) -> None:
    """``--runs``, ``--tag``, ``--device``, ``--threads``, ``--cache-dir`` (and ``--resume``)."""
    g = parser.add_argument_group("run options")
    g.add_argument("--runs", default=DEFAULT_RUNS, metavar="DIR",
                   help="root of the run directories (default %(default)s)")
    g.add_argument("--tag", default=None, help="name the preset directory <preset>-<tag> instead of "
                                                "<preset>-<hash of the overrides>")
    g.add_argument("--device", default="auto", help="torch device: auto (cuda if available), cpu, "
                                                     "cuda, cuda:1 ... (default %(default)s)")
    g.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    g.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="cache of generated data (default <runs>/cache)")
    g.add_argument("--source-dir", default=None, metavar="DIR",
                   help="directory of source models source_<arch>_eps<eps>.pt "
                        "(default <runs>/sources/<preset>, where `training pretrain` writes them)")
    if resume:
        g.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                       help="continue interrupted runs from last.pt and skip finished ones "
                            "(default); --no-resume starts every run over")


def setup_device(args: argparse.Namespace) -> str:
    """Apply ``--threads``; the device ``--device`` names (``auto`` -> cuda if available)."""
    import torch

    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    device = getattr(args, "device", "auto")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _splits(values: Sequence[str] | None, default: Sequence[str] = SPLIT_NAMES) -> list[str]:
    out = []
    for v in values or default:
        for s in v.split(","):
            s = s.strip().upper()
            if s:
                if s not in SPLIT_NAMES:
                    raise SystemExit(f"unknown split {s!r}; choose from {', '.join(SPLIT_NAMES)}")
                out.append(s)
    return out


def _context(args: argparse.Namespace) -> dict[str, Any]:
    name, preset = preset_from_args(args)
    root = run_root(args, name, preset)
    return {"name": name, "preset": preset, "root": root,
            "source_dir": args.source_dir or default_source_dir(args.runs, name),
            "cache_dir": args.cache_dir or os.path.join(args.runs, "cache")}


def _add_run_selection(p: argparse.ArgumentParser, required_strategy: bool = True) -> None:
    p.add_argument("--split", default="S1", choices=list(SPLIT_NAMES), help="data split (default S1)")
    p.add_argument("--strategy", required=required_strategy,
                   help=f"training strategy: {', '.join(STRATEGIES)} (ST->FT, ST→FT also accepted)")


def _select(args: argparse.Namespace, ctx: dict):
    return resolve_run(ctx["name"], ctx["preset"], args.split, get_strategy(args.strategy))


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from training import engine
    from training.report import result_summary
    from training.sources import SourceSpec

    ctx = _context(args)
    device = setup_device(args)
    cfg = _select(args, ctx)
    source = None
    if args.source:
        if not STRATEGIES[cfg.strategy].transfer:
            raise SystemExit(f"--source given but {cfg.strategy} trains from scratch")
        source = SourceSpec(path=args.source, arch=cfg.arch, eps_source=float(cfg.eps_source),
                            fmt=args.source_format, trust_pickle=args.trust_pickle)
    print(f"run directory root: {ctx['root']}")
    try:
        results = engine.run_many([cfg], ctx["root"], source_dir=ctx["source_dir"], source=source,
                                  resume=args.resume, device=device, cache_dir=ctx["cache_dir"])
    except engine.RunError as exc:
        raise SystemExit(f"error: {exc}") from exc
    print(result_summary(results))
    return 0


def _run_plan(args: argparse.Namespace, ctx: dict, cfgs) -> list[dict]:
    from training import engine

    if args.dry_run:
        for c in cfgs:
            print(f"{engine.run_status(ctx['root'], c):8s} {c.split} {c.name} ({c.group})")
        return []
    try:
        return engine.run_many(cfgs, ctx["root"], source_dir=ctx["source_dir"], resume=args.resume,
                               device=setup_device(args), cache_dir=ctx["cache_dir"])
    except engine.RunError as exc:
        raise SystemExit(f"error: {exc}") from exc


def cmd_sweep(args: argparse.Namespace) -> int:
    from training import engine
    from training.report import result_summary

    ctx = _context(args)
    p = ctx["preset"]
    splits = _splits(args.split, sorted(set(p.sweep_layers_splits) | set(p.sweep_eps_splits)))
    cfgs = engine.plan_study(ctx["name"], p, splits, main=False,
                             sweep_layers=args.kind in ("layers", "both"),
                             sweep_eps=args.kind in ("eps", "both"))
    print(f"run directory root: {ctx['root']} ({len(cfgs)} runs)")
    results = _run_plan(args, ctx, cfgs)
    if results:
        print(result_summary(results))
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from training import engine
    from training.report import write_report

    ctx = _context(args)
    splits = _splits(args.split)
    cfgs = engine.plan_study(ctx["name"], ctx["preset"], splits, sweep_layers=not args.no_sweeps,
                             sweep_eps=not args.no_sweeps)
    print(f"run directory root: {ctx['root']} ({len(cfgs)} runs)")
    results = _run_plan(args, ctx, cfgs)
    if results:
        paths = write_report(ctx["root"], ctx["name"], ctx["preset"], splits)
        print("report: " + ", ".join(paths.values()))
        with open(paths["results_md"]) as f:
            print(f.read())
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from fillcls_ros import core
    from training import engine

    ctx = _context(args)
    device = setup_device(args)
    p = ctx["preset"]
    if args.checkpoint:
        path = args.checkpoint
    else:
        if not args.strategy:
            raise SystemExit("give --strategy (a run of the study) or --checkpoint PATH")
        path = os.path.join(engine.run_dir_for(ctx["root"], _select(args, ctx)), "model.pt")
    try:
        model, header = core.load_classifier(path, device)
    except core.CheckpointError as exc:
        raise SystemExit(f"error: {exc}") from exc
    if header.input_size != p.size:
        raise SystemExit(f"{path} takes {header.input_size} px crops but the preset makes {p.size} px "
                         f"ones: add --size {header.input_size}")
    _, test_set = engine.load_split(p, args.split, ctx["cache_dir"])
    eps = float(p.eval_eps.get(args.split, 0.0))
    m = engine.evaluate(model, test_set, batch_size=p.eval_batch_size, eps=eps, steps=p.eval_steps,
                        step_factor=p.step_factor, max_attack=p.eval_max, seed=p.seed, device=device)
    m["checkpoint"] = path
    m["split"] = args.split
    print(f"{path} on {args.split} ({m['n']} test crops): acc {100 * m['acc']:.2f}%"
          + (f", robust acc {100 * m['robust_acc']:.2f}% (eps {eps:g}, {m['robust_n']} crops)"
             if m["robust_acc"] is not None else ""))
    for c, v in m["per_container"].items():
        print(f"  {c}: {100 * v:.2f}% ({m['container_n'][c]} crops)")
    print("  confusion (rows true, columns predicted; " + ", ".join(m["classes"]) + "):")
    for row in m["confusion"]:
        print("   " + " ".join(f"{v:6d}" for v in row))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(m, f, indent=1)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from training.report import collect, write_report

    ctx = _context(args)
    splits = _splits(args.split)
    if not os.path.isdir(ctx["root"]):
        raise SystemExit(f"error: no runs under {ctx['root']} (run `python -m training study` first)")
    paths = write_report(ctx["root"], ctx["name"], ctx["preset"], splits, args.out)
    missing = collect(ctx["root"], ctx["name"], ctx["preset"], splits)["missing"]
    print("report: " + ", ".join(paths.values()))
    if missing:
        print(f"{len(missing)} planned runs not finished: {', '.join(missing)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from fillcls_ros import core
    from training import engine
    from training.config import RunConfig

    if args.run_dir:
        run_dir = args.run_dir
    else:
        if not args.strategy:
            raise SystemExit("give --strategy (a run of the study) or --run-dir DIR")
        ctx = _context(args)
        run_dir = engine.run_dir_for(ctx["root"], _select(args, ctx))
    result = engine.load_result(run_dir)
    if result is None:
        raise SystemExit(f"error: {run_dir} has no finished run (result.json); train it first")
    cfg = RunConfig.from_dict(result["config"])
    try:
        header, state_dict, _ = core.read_checkpoint(os.path.join(run_dir, "model.pt"))
    except core.CheckpointError as exc:
        raise SystemExit(f"error: {exc}") from exc
    training = cfg.training_header()
    training.update(test_acc=result["metrics"]["acc"], robust_acc=result["metrics"]["robust_acc"],
                    eval_eps=cfg.eval_eps, run_dir=os.path.abspath(run_dir))
    header = dataclasses.replace(header, model_id=args.model_id or engine.model_id(cfg),
                                 training=training)
    if args.half:
        state_dict = {k: v.half() if v.is_floating_point() else v for k, v in state_dict.items()}
    core.save_checkpoint(args.out, state_dict, header)
    core.load_classifier(args.out)  # the node must be able to load it
    print(f"wrote {args.out}: {header.model_id} ({header.arch}, {header.input_size} px, "
          f"test acc {100 * result['metrics']['acc']:.2f}%)")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    fields = {f.name: f for f in dataclasses.fields(Preset)}
    if args.show:
        p = get_preset(args.show).to_dict()
        width = max(map(len, p))
        for k, v in p.items():
            print(f"{k:{width}s}  {_fmt(v):30s}  {fields[k].metadata.get('help', '')}")
        return 0
    print("paper: the recipe of Modas et al. (ICIP 2021), 224 px, full data (a GPU job).")
    for name in PRESETS:
        if name == "paper":
            continue
        diff = preset_diff(name)
        print(f"\n{name}: differs from paper in {len(diff)} values (field: paper -> {name}; meaning)")
        for k, (a, b) in diff.items():
            print(f"  {k}: {_fmt(a)} -> {_fmt(b)}\n      {fields[k].metadata.get('help', '')}")
    print("\n`python -m training presets --show NAME` lists every value of a preset.")
    return 0


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m training``, extension commands included."""
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train and evaluate the filling-level classifier with the six strategies of "
                    "Modas et al., ICIP 2021 (ST, AT, ST->FT, ST->AFT, AT->FT, AT->AFT).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  python -m training presets\n"
               "  python -m training train --preset tiny --split S1 --strategy AT\n"
               "  python -m training study --preset cpu          # + sweeps + report, resumable\n"
               "  python -m training export --preset cpu --split S1 --strategy AT-FT --out models/f.pt")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train", help="train and evaluate one run",
                       description="Train one strategy on one split, evaluate it and save it in "
                                   "<runs>/<preset>/<split>/<run name>/.")
    _add_run_selection(p)
    g = p.add_argument_group("explicit source model (instead of --source-dir)")
    g.add_argument("--source", default=None, metavar="PATH",
                   help="source model file for a transfer strategy (its eps: --eps-source EPS)")
    from training import sources

    formats = tuple(getattr(sources, "FORMATS", ("project",)))
    g.add_argument("--source-format", choices=formats, default="auto" if "auto" in formats else "project",
                   help="format of --source (default %(default)s; see training.sources)")
    g.add_argument("--trust-pickle", action="store_true",
                   help="allow pickled (non weights-only) source files; only for files you trust")
    add_common_options(p)
    add_preset_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sweep", help="Fig. 5 sweeps: L for ST->FT, eps_source for AT->FT",
                       description="Run the sensitivity sweeps of Fig. 5: ST->FT over --sweep-layers "
                                   "and AT->FT over --sweep-eps (L = --fixed-layers).")
    p.add_argument("--kind", choices=("layers", "eps", "both"), default="both", help="which sweep")
    p.add_argument("--split", nargs="*", default=None,
                   help="splits (default: --sweep-layers-splits / --sweep-eps-splits)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their state, train nothing")
    add_common_options(p)
    add_preset_options(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("study", help="all six strategies x splits, the sweeps, then the report",
                       description="The whole study: six strategies on every split, the Fig. 5 "
                                   "sweeps, then tables and figures. Interrupt and re-run to resume.")
    p.add_argument("--split", nargs="*", default=None, help="splits (default S1 S2 S3)")
    p.add_argument("--no-sweeps", action="store_true", help="only the strategies x splits table")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their state, train nothing")
    add_common_options(p)
    add_preset_options(p)
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("evaluate", help="evaluate a run's model or a checkpoint on a split",
                       description="Accuracy overall, per container, per class, and under the "
                                   "test-time PGD attack (--eval-eps, --eval-steps, --eval-max).")
    _add_run_selection(p, required_strategy=False)
    p.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="a classifier checkpoint instead of a run's model.pt")
    p.add_argument("--out", default=None, metavar="JSON", help="also write the metrics as JSON")
    add_common_options(p, resume=False)
    add_preset_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("report", help="tables (CSV, Markdown) and figures (PNG) of a study",
                       description="results.csv/.md, confusion.csv, sweeps.csv, fig5.png, fig6.png "
                                   "from the finished runs (default into <runs>/<preset>/report).")
    p.add_argument("--split", nargs="*", default=None, help="splits (default S1 S2 S3)")
    p.add_argument("--out", default=None, metavar="DIR", help="output directory")
    add_common_options(p, resume=False)
    add_preset_options(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("export", help="write a run's model as the checkpoint the node loads",
                       description="Copy a finished run's model into a node checkpoint whose header "
                                   "names strategy, split, L, eps_source, eps_target and accuracy.")
    _add_run_selection(p, required_strategy=False)
    p.add_argument("--run-dir", default=None, metavar="DIR", help="a run directory instead of "
                                                                   "--preset/--split/--strategy")
    p.add_argument("--out", required=True, metavar="PATH", help="checkpoint to write")
    p.add_argument("--model-id", default=None, help="model id in the header (default: run name)")
    p.add_argument("--half", action="store_true", help="store the weights in float16 (half the file "
                                                       "size; the node still computes in float32 unless "
                                                       "its fp16 parameter is set)")
    add_common_options(p, resume=False)
    add_preset_options(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("presets", help="print the presets and what differs from the paper",
                       description="Show how the tiny and cpu presets differ from the paper's recipe.")
    p.add_argument("--show", choices=list(PRESETS), default=None, help="list every value of one preset")
    p.set_defaults(func=cmd_presets)

    for name in EXTENSIONS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
