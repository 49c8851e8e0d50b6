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
and :func:`setup_device`. Errors a user can fix (:class:`training.runs.RunError`: missing source,
run directory of another config, bad data; :class:`fillcls.atomic.WriteError`: unwritable folder,
full disk) end a command with one ``error: ...`` line and exit code 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys
from typing import Any, Sequence

from fillcls.atomic import WriteError
from fillcls.core import CheckpointError
from training import assets
from training.config import (NON_RUN_FIELDS, PRESETS, RESOLVED_FIELDS, SPLIT_NAMES, STRATEGIES, Preset, get_preset,
                             get_strategy, preset_diff, resolve_run)
from training.runs import (DEFAULT_RUNS, RunError, add_run_options, add_settings_options, digest,
                           fmt_value, settings_from_args, setup_device, write_json)

EXTENSIONS: tuple[str, ...] = ("training.pretrain", "training.segtrain", "training.fetch",
                                "training.data.ccm_import", "training.authors")
#: Errors a command reports as one ``error: ...`` line (exit code 1), without a traceback.
CLEAR_ERRORS = (RunError, WriteError, CheckpointError, assets.AssetError, assets.MissingAsset)


# --------------------------------------------------------------------------------------------
# Shared option helpers (also for the extension modules)
# --------------------------------------------------------------------------------------------


def add_preset_options(parser: argparse.ArgumentParser, default_preset: str = "cpu") -> None:
    """``--preset``, ``--set`` and one ``--<field>`` option per :class:`Preset` field."""
    add_settings_options(parser, Preset, PRESETS, default=default_preset, prefix="field_",
                         preset_help=f"preset of every value below (default {default_preset}; "
                                     "`python -m training presets` shows them)",
                         description="override one value of the preset (defaults: paper / cpu / tiny)")


def preset_from_args(args: argparse.Namespace) -> tuple[str, Preset]:
    """The preset named by ``--preset`` with ``--set`` and ``--<field>`` overrides applied."""
    return args.preset, settings_from_args(args, PRESETS, "field_")


def overrides(name: str, preset: Preset) -> dict[str, Any]:
    """Values of ``preset`` that differ from the preset ``name`` and change runs' results (the
    per-run L / eps fields, :data:`RESOLVED_FIELDS`, are in the run names instead)."""
    base, cur = get_preset(name).to_dict(), preset.to_dict()
    return {k: cur[k] for k in cur if cur[k] != base[k] and k not in NON_RUN_FIELDS | RESOLVED_FIELDS}


def run_root(args: argparse.Namespace, name: str, preset: Preset) -> str:
    """``<runs>/<preset>``, ``<runs>/<preset>-<tag>`` or ``<runs>/<preset>-<hash of overrides>``."""
    tag = getattr(args, "tag", None)
    changed = overrides(name, preset)
    if tag:
        leaf = f"{name}-{tag}"
    elif changed:
        leaf = f"{name}-{digest(changed, 8)}"
    else:
        leaf = name
    return os.path.join(getattr(args, "runs", DEFAULT_RUNS), leaf)


def default_source_dir(runs: str, preset_name: str, sources: str = "inhouse") -> str:
    """Where the source models of a preset are looked for: ``<runs>/sources/<preset>`` (where
    ``training pretrain`` puts them) for ``sources="inhouse"``, the asset directory of
    ``training fetch`` (``$FILLCLS_ASSETS`` or ``assets``) for ``sources="paper"``."""
    return assets.DEFAULT_DIR if sources == "paper" else os.path.join(runs, "sources", preset_name)


def add_common_options(parser: argparse.ArgumentParser, resume: bool = True) -> None:
    """The run options (:func:`training.runs.add_run_options`) plus ``--tag`` and ``--source-dir``."""
    g = add_run_options(parser, resume=resume)
    g.add_argument("--tag", default=None, help="name the preset directory <preset>-<tag> instead of "
                                                "<preset>-<hash of the overrides>")
    g.add_argument("--source-dir", default=None, metavar="DIR",
                   help="directory of the source models: with --sources paper the files of `training "
                        "fetch sources` (resnet18-f37072fd.pth, resnet18_l2_eps<E>.ckpt; default "
                        "$FILLCLS_ASSETS or assets), with --sources inhouse source_<arch>_eps<E>.pt "
                        "(default <runs>/sources/<preset>, where `training pretrain` writes them)")
    g.add_argument("--trust-pickle", action="store_true",
                   help="allow pickled (non weights-only) source files, e.g. Salman et al.'s robust "
                        "checkpoints; only for files you trust")


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
            "source_dir": args.source_dir or default_source_dir(args.runs, name, preset.sources),
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


def _clear_errors(func):
    """``func(*args)``, with :data:`CLEAR_ERRORS` turned into ``SystemExit("error: ...")``."""
    def call(*args, **kw):
        try:
            return func(*args, **kw)
        except CLEAR_ERRORS as exc:
            raise SystemExit(f"error: {exc}") from exc
    return call


@_clear_errors
def cmd_train(args: argparse.Namespace) -> int:
    from training import engine
    from training.report import result_summary

    ctx = _context(args)
    device = setup_device(args)
    cfg = _select(args, ctx)
    source = None
    if args.source:
        if not STRATEGIES[cfg.strategy].transfer:
            raise SystemExit(f"--source given but {cfg.strategy} trains from scratch")
        cfg, source = _explicit_source(args, ctx, cfg)
    print(f"run directory root: {ctx['root']}")
    results = engine.run_many([cfg], ctx["root"], source_dir=ctx["source_dir"], source=source,
                              resume=args.resume, device=device, cache_dir=ctx["cache_dir"],
                              trust_pickle=args.trust_pickle)
    print(result_summary(results))
    return 0


def _explicit_source(args: argparse.Namespace, ctx: dict, cfg):
    """``train --source NAME|FILE``: the run (its eps_source the source's, where the name or file
    name says it: ``robust-l2-eps0.5``, ``resnet18_l2_eps0.5.ckpt``, ``source_resnet18_eps1.pt``)
    and the :class:`SourceSpec`, hashed and its format detected."""
    import dataclasses

    given = args.source
    is_name = not os.path.isfile(given) and (given in assets.REGISTRY or given.startswith("inhouse-"))
    name = given if is_name else assets.name_for_file(given)
    known = name in assets.REGISTRY or name.startswith("inhouse-")
    if known:
        asset = assets.get(name)
        if asset.kind != "source":
            raise assets.AssetError(f"--source {given}: {name} is a {asset.kind}, not a source model")
        eps = float(asset.eps_source or 0.0)
        if (STRATEGIES[cfg.strategy].source == "standard") != (eps == 0):
            raise RunError(f"--source {given}: {cfg.strategy} needs a "
                           f"{'standard (eps 0)' if eps else 'robust (eps > 0)'} source, {name} has eps {eps:g}")
        if eps != cfg.eps_source:
            cfg = resolve_run(ctx["name"], ctx["preset"], args.split, cfg.strategy, eps_source=eps)
    if is_name:
        directory = args.source_dir or default_source_dir(args.runs, ctx["name"],
                                                          "inhouse" if name.startswith("inhouse-") else "paper")
        spec = assets.source_spec(name, directory, cfg.arch, args.trust_pickle)
    else:
        spec = assets.spec_for_file(given, cfg.arch, cfg.eps_source, args.source_format, args.trust_pickle)
    return cfg, dataclasses.replace(spec, eps_source=float(cfg.eps_source))


def _run_plan(args: argparse.Namespace, ctx: dict, cfgs) -> list[dict]:
    from training import engine

    if args.dry_run:
        missing = {(m.cfg.split, m.cfg.name) for m in engine.attach_sources(
            cfgs, ctx["source_dir"], trust_pickle=args.trust_pickle)}
        for c in cfgs:
            state = "nosource" if (c.split, c.name) in missing else engine.run_status(ctx["root"], c)
            print(f"{state:8s} {c.split} {c.name} ({c.group})")
        return []
    return engine.run_many(cfgs, ctx["root"], source_dir=ctx["source_dir"], resume=args.resume,
                           device=setup_device(args), cache_dir=ctx["cache_dir"],
                           trust_pickle=args.trust_pickle)


@_clear_errors
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


@_clear_errors
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


def _print_metrics(path: str, split: str, eps: float, m: dict) -> None:
    print(f"{path} on {split} ({m['n']} test crops): acc {100 * m['acc']:.2f}%"
          + (f", robust acc {100 * m['robust_acc']:.2f}% (eps {eps:g}, {m['robust_n']} crops)"
             if m["robust_acc"] is not None else ""))
    for c, v in m["per_container"].items():
        print(f"  {c}: {100 * v:.2f}% ({m['container_n'][c]} crops)")
    print("  confusion (rows true, columns predicted; " + ", ".join(m["classes"]) + "):")
    for row in m["confusion"]:
        print("   " + " ".join(f"{v:6d}" for v in row))


@_clear_errors
def cmd_evaluate(args: argparse.Namespace) -> int:
    from fillcls import core
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
    m = engine.evaluate(model, test_set, eps=eps, device=device, **engine.eval_options(p))
    m["checkpoint"] = path
    m["split"] = args.split
    _print_metrics(path, args.split, eps, m)
    if args.out:
        write_json(args.out, m)
    return 0


@_clear_errors
def cmd_compare(args: argparse.Namespace) -> int:
    from training import robustness

    return robustness.run(args, _context(args))


@_clear_errors
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


def export_source(args: argparse.Namespace):
    """The finished run ``export`` reads: ``(run_dir, result, RunConfig, header, state_dict)``;
    the header's ``training`` names the run and its accuracy."""
    from fillcls import core
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
    try:
        cfg = RunConfig.from_dict(result["config"])
        header, state_dict, _ = core.read_checkpoint(os.path.join(run_dir, "model.pt"))
    except (KeyError, TypeError, ValueError, core.CheckpointError) as exc:
        raise SystemExit(f"error: {run_dir}: {exc}") from exc
    training = cfg.training_header()
    training.update(test_acc=result["metrics"]["acc"], robust_acc=result["metrics"]["robust_acc"],
                    eval_eps=cfg.eval_eps, run_dir=os.path.abspath(run_dir))
    header = dataclasses.replace(header, model_id=args.model_id or engine.model_id(cfg), training=training)
    return run_dir, result, cfg, header, state_dict


def write_project_checkpoint(args: argparse.Namespace, header, state_dict) -> None:
    """``export``'s writer for the node's checkpoint format (``--half``: float16 weights)."""
    from fillcls import core

    if args.half:
        state_dict = {k: v.half() if v.is_floating_point() else v for k, v in state_dict.items()}
    core.save_checkpoint(args.out, state_dict, header)
    core.load_classifier(args.out)  # the node must be able to load it


@_clear_errors
def write_onnx(args: argparse.Namespace, header, state_dict) -> None:
    """``export --format onnx``'s writer: the checkpoint as ONNX (normalisation in the graph, the
    header as metadata; ``--int8`` adds ``<stem>.int8.onnx``), see training/onnx_export.py."""
    import tempfile

    from training.onnx_export import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        pt = os.path.join(tmp, "model.pt")
        write_project_checkpoint(argparse.Namespace(**{**vars(args), "out": pt}), header, state_dict)
        export_onnx(pt, args.out, int8=args.int8)


def cmd_export(args: argparse.Namespace) -> int:
    _, result, _, header, state_dict = export_source(args)
    (write_onnx if args.format == "onnx" else write_project_checkpoint)(args, header, state_dict)
    print(f"wrote {args.out}: {header.model_id} ({header.arch}, {header.input_size} px, "
          f"test acc {100 * result['metrics']['acc']:.2f}%)")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    fields = {f.name: f for f in dataclasses.fields(Preset)}
    if args.show:
        p = get_preset(args.show).to_dict()
        width = max(map(len, p))
        for k, v in p.items():
            print(f"{k:{width}s}  {fmt_value(v):30s}  {fields[k].metadata.get('help', '')}")
        return 0
    print("paper: the recipe of Modas et al. (ICIP 2021), 224 px, the real C-CCM (--data MANIFEST), "
          "ImageNet / Salman et al. robust ImageNet sources (--source-dir, `training fetch sources`); a GPU job.")
    for name in PRESETS:
        if name == "paper":
            continue
        diff = preset_diff(name)
        print(f"\n{name}: differs from paper in {len(diff)} values (field: paper -> {name}; meaning)")
        for k, (a, b) in diff.items():
            print(f"  {k}: {fmt_value(a)} -> {fmt_value(b)}\n      {fields[k].metadata.get('help', '')}")
    print("\n`python -m training presets --show NAME` lists every value of a preset.")
    return 0


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------


def _command(sub, name: str, func, help: str, description: str, *, resume: bool = True,
             selection: bool | None = None) -> argparse.ArgumentParser:
    """A trainer command's parser (with ``--split/--strategy`` when ``selection`` is not None); the
    caller adds its own options, then :func:`_finish` the run and preset options."""
    p = sub.add_parser(name, help=help, description=description)
    if selection is not None:
        _add_run_selection(p, required_strategy=selection)
    p.set_defaults(func=func, _resume_option=resume)
    return p


def _finish(*parsers: argparse.ArgumentParser) -> None:
    for p in parsers:
        add_common_options(p, resume=p.get_default("_resume_option"))
        add_preset_options(p)


def _add_train(sub) -> argparse.ArgumentParser:
    p = _command(sub, "train", cmd_train, "train and evaluate one run",
                 "Train one strategy on one split, evaluate it and save it in "
                 "<runs>/<preset>/<split>/<run name>/.", selection=True)
    g = p.add_argument_group("explicit source model (instead of the preset's --sources)")
    g.add_argument("--source", default=None, metavar="NAME|PATH",
                   help="source model of a transfer strategy: a name (imagenet, robust-l2-eps<E>, "
                        "inhouse-eps<E>; `python -m training fetch --list`), found in --source-dir, or a "
                        "file; its eps_source is the one its name says, else --eps-source EPS")
    from training import sources

    g.add_argument("--source-format", choices=sources.FORMATS, default="auto",
                   help="format of --source (default %(default)s; see training.sources)")
    return p


def _add_sweep_and_study(sub) -> list[argparse.ArgumentParser]:
    sweep = _command(sub, "sweep", cmd_sweep, "Fig. 5 sweeps: L for ST->FT, eps_source for AT->FT",
                     "Run the sensitivity sweeps of Fig. 5: ST->FT over --sweep-layers and AT->FT over "
                     "--sweep-eps (L = --fixed-layers).")
    sweep.add_argument("--kind", choices=("layers", "eps", "both"), default="both", help="which sweep")
    sweep.add_argument("--split", nargs="*", default=None,
                       help="splits (default: --sweep-layers-splits / --sweep-eps-splits)")
    study = _command(sub, "study", cmd_study, "all six strategies x splits, the sweeps, then the report",
                     "The whole study: six strategies on every split, the Fig. 5 sweeps, then tables "
                     "and figures. Interrupt and re-run to resume.")
    study.add_argument("--split", nargs="*", default=None, help="splits (default S1 S2 S3)")
    study.add_argument("--no-sweeps", action="store_true", help="only the strategies x splits table")
    for p in (sweep, study):
        p.add_argument("--dry-run", action="store_true", help="list the runs and their state, train nothing")
    return [sweep, study]


def _add_evaluate_and_report(sub) -> list[argparse.ArgumentParser]:
    ev = _command(sub, "evaluate", cmd_evaluate, "evaluate a run's model or a checkpoint on a split",
                  "Accuracy overall, per container, per class, and under the test-time PGD attack "
                  "(--eval-eps, --eval-steps, --eval-max).", resume=False, selection=False)
    ev.add_argument("--checkpoint", default=None, metavar="PATH",
                    help="a classifier checkpoint instead of a run's model.pt")
    ev.add_argument("--out", default=None, metavar="JSON", help="also write the metrics as JSON")
    rep = _command(sub, "report", cmd_report, "tables (CSV, Markdown) and figures (PNG) of a study",
                   "results.csv/.md, confusion.csv, sweeps.csv, fig5.png, fig6.png from the finished "
                   "runs (default into <runs>/<preset>/report).", resume=False)
    rep.add_argument("--split", nargs="*", default=None, help="splits (default S1 S2 S3)")
    rep.add_argument("--out", default=None, metavar="DIR", help="output directory")
    from training.robustness import __doc__ as compare_doc, add_arguments as compare_arguments

    cmp = _command(sub, "compare", cmd_compare, "models side by side on their splits' unseen containers: clean, "
                   "PGD and corruption accuracy, both renderers", compare_doc, resume=False)
    cmp.formatter_class = argparse.RawDescriptionHelpFormatter
    compare_arguments(cmp)
    return [ev, rep, cmp]


def _add_export(sub) -> argparse.ArgumentParser:
    p = _command(sub, "export", cmd_export, "write a run's model as the checkpoint the node loads",
                 "Copy a finished run's model into a node checkpoint whose header names strategy, "
                 "split, L, eps_source, eps_target and accuracy.", resume=False, selection=False)
    p.add_argument("--run-dir", default=None, metavar="DIR", help="a run directory instead of "
                                                                   "--preset/--split/--strategy")
    p.add_argument("--out", required=True, metavar="PATH", help="checkpoint to write")
    p.add_argument("--model-id", default=None, help="model id in the header (default: run name)")
    p.add_argument("--half", action="store_true", help="store the weights in float16 (half the file "
                                                       "size; the node still computes in float32 unless "
                                                       "its fp16 parameter is set)")
    p.add_argument("--format", choices=("pt", "onnx"), default="pt",
                   help="pt: the fillcls checkpoint (torch backend); onnx: for the onnxruntime backend")
    p.add_argument("--int8", action="store_true", help="with --format onnx: also <stem>.int8.onnx, static "
                                                       "int8 calibrated on procedural training crops")
    return p


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
    _finish(_add_train(sub), *_add_sweep_and_study(sub), *_add_evaluate_and_report(sub), _add_export(sub))
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
