"""In-house source models: standard (eps^s = 0) or L2-PGD adversarial pretraining on a source dataset.

``python -m training pretrain --preset cpu`` trains the ladder of source models the transfer
strategies need (one per eps^s, one after another; finished ones are skipped, an interrupted one
resumes from its last epoch) and writes each as ``source_{arch}_eps{eps:g}.pt`` (project
checkpoint, header ``kind="source"``) into ``<runs>/sources/<preset>`` (``--out``), where
:func:`training.sources.find_source` and the trainer's ``--source-dir`` default look.

Source datasets: ``fractals`` (default; :mod:`training.data.fractals`, formula-driven, no
download), ``cutouts`` (one class per real photographic cut-out of ``make photos``,
:mod:`training.data.cutouts`), ``fractals+cutouts`` (as many classes of each) or the path of any ImageFolder
(:mod:`training.data.folder`). Every model is evaluated
on held-out clean source images (``source_acc``) and under PGD at its own eps^s
(``source_robust_acc``) and at a common ``eval_eps`` (``source_common_robust_acc``); the values go
into the checkpoint header and ``<out>/sources.json``. Training is :func:`training.engine.fit`
(per-epoch checkpoint ``<out>/runs/eps<eps>/last.pt``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Sequence

from fillcls.atomic import WriteError
from fillcls.core import CheckpointError, CheckpointHeader
from fillcls.world.photos import PhotoIndexError, PhotosMissingError
from training.config import Recipe, get_preset as _trainer_preset
from training.runs import (RunDir, RunError, add_run_options, add_settings_options, digest, read_json,
                           setting, settings_from_args, setup_device, write_json)

Log = Callable[[str], None]


@dataclass(frozen=True)
class PretrainPreset(Recipe):
    """Every value of a source pretraining: the shared recipe (:class:`training.config.Recipe`)
    plus the source data, the learning rate and the held-out evaluation."""

    WHAT: ClassVar[str] = "pretrain"

    arch: str = setting("resnet18", "architecture")
    data: str = setting("fractals", "'fractals' (procedural IFS fractals, no download), 'cutouts' (one class "
                                    "per photographic cut-out of `make photos`), 'fractals+cutouts' (both) "
                                    "or the path of an ImageFolder (root/<class>/<img>, or root/train + root/val)")
    size: int = setting(48, "input size in pixels (presets: the trainer preset's size)")
    n_classes: int = setting(24, "number of source classes (fractals: IFS; cutouts: spread over the "
                                 "cut-outs, 0 = all; fractals+cutouts: N of each; folder: first N, 0 = all)")
    per_class: int = setting(125, "training images per class (folder: at most, 0 = all)")
    test_per_class: int = setting(25, "held-out images per class for the source accuracy "
                                      "(folder without val/: 0 = 10% of each class)")
    data_seed: int = setting(0, "seed of the source data (fractal classes and images, folder subsets)")
    lr: float = setting(0.1, "initial learning rate (linear decay to 0)")
    eval_steps: int = setting(10, "PGD steps of the held-out robust accuracy")
    eval_max: int = setting(240, "attack at most this many held-out images (0 = all)")
    eval_eps: float = setting(0.25, "common eps at which every model of the ladder is also attacked (0 = skip)")
    eval_batch_size: int = setting(120, "evaluation batch size")

    def validate(self) -> None:
        super().validate()
        least = 1 if self.data in ("fractals", "fractals+cutouts") else 0
        if self.n_classes < least or self.per_class < least or self.test_per_class < 0:
            raise ValueError(f"data {self.data!r} needs n_classes >= {least}, per_class >= {least} and "
                             f"test_per_class >= 0, got {self.n_classes}, {self.per_class}, {self.test_per_class}")


#: ``cpu``: 24 fractal classes x 125 images at the input size of the trainer's ``cpu`` preset,
#: 6 epochs, 3-step PGD (instead of 10) for the adversarial models, so that the 5-model ladder
#: fits in ~25 min on 2 idle cores.
CPU = PretrainPreset(size=_trainer_preset("cpu").size, epochs=6, attack_steps=3)
#: ``tiny``: seconds, for the tests.
TINY = CPU.replace(size=_trainer_preset("tiny").size, n_classes=4, per_class=12, test_per_class=4,
                   epochs=2, batch_size=8, attack_steps=2, eval_steps=2, eval_max=16, eval_eps=0.0,
                   eval_batch_size=32)
#: ``paper``: 224 px, 1000 classes (FractalDB-1k-like; 100 images per class keeps the uint8 set at
#: ~15 GB of memory), a GPU job. The paper itself starts from ImageNet models (Salman et al. 2020):
#: load those with ``--source`` instead when you have them.
PAPER = CPU.replace(size=_trainer_preset("paper").size, n_classes=1000, per_class=100,
                    test_per_class=10, epochs=90, batch_size=256, weight_decay=1e-4, eval_max=1000,
                    eval_eps=0.25, eval_batch_size=256)
PRESETS: dict[str, PretrainPreset] = {"tiny": TINY, "cpu": CPU, "paper": PAPER}

#: Source datasets built in (any other ``data`` is the path of an ImageFolder).
BUILTIN_DATA = ("fractals", "cutouts", "fractals+cutouts")
#: Fields that do not change the trained weights (a finished model with other values is reused).
_EVAL_FIELDS = ("eval_steps", "eval_max", "eval_eps", "eval_batch_size")


def default_ladder(preset_name: str) -> tuple[float, ...]:
    """eps^s values the trainer's preset of the same name needs: 0, its eps_source values and its
    AT->FT sweep (cpu: 0 0.05 0.25 0.5 1)."""
    from training.config import get_preset

    p = get_preset(preset_name)
    return tuple(sorted({0.0, *map(float, p.eps_source.values()), *map(float, p.sweep_eps)}))


def identity(p: PretrainPreset, eps: float) -> dict[str, Any]:
    """Settings that decide the weights of the eps model (data given as an absolute path)."""
    d = {k: v for k, v in p.recipe_values().items() if k not in _EVAL_FIELDS}
    if d["data"] not in BUILTIN_DATA:
        d["data"] = os.path.abspath(d["data"])
    d["eps"] = float(eps)
    return d


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def load_source_data(p: PretrainPreset, cache_dir: str | None = None, log: Log = print):
    """Train and held-out test :class:`~training.data.base.CropSet` of the source dataset."""
    if p.data == "fractals":
        from training.data.fractals import fractal_splits

        return fractal_splits(p.n_classes, p.per_class, p.test_per_class, p.size, seed=p.data_seed,
                              cache_dir=cache_dir, log=log)
    if p.data in ("cutouts", "fractals+cutouts"):
        from training.data import cutouts

        make = cutouts.cutout_splits if p.data == "cutouts" else cutouts.mixed_splits
        try:
            return make(p.n_classes, p.per_class, p.test_per_class, p.size, seed=p.data_seed,
                        cache_dir=cache_dir, log=log)
        except PhotoIndexError:
            raise
        except ValueError as exc:  # too many classes for the photos there are
            raise PretrainError(f"data {p.data!r}: {exc}") from exc
    from training.data.folder import folder_splits

    return folder_splits(p.data, p.size, max_per_class=p.per_class, test_per_class=p.test_per_class,
                         max_classes=p.n_classes, seed=p.data_seed, cache_dir=cache_dir, log=log)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


class PretrainError(RunError):
    """A source model cannot be (re)trained as asked (another model in the way, ...)."""


def run_dir_for(out_dir: str, eps: float) -> str:
    return os.path.join(out_dir, "runs", f"eps{float(eps):g}")


def _run(p: PretrainPreset, eps: float, out_dir: str) -> RunDir:
    """The run directory of the eps model; its output is the source file."""
    from training.sources import source_path

    return RunDir(run_dir_for(out_dir, eps), identity(p, eps), outputs=(source_path(out_dir, p.arch, eps),),
                  what="source model", elsewhere="another --out")


def _header_identity(path: str) -> Any:
    """``header.training.identity`` of a source file (None if unreadable)."""
    from fillcls.core import read_checkpoint

    try:
        return (read_checkpoint(path)[0].training or {}).get("identity")
    except CheckpointError:
        return None


def status(p: PretrainPreset, eps: float, out_dir: str) -> str:
    """``done`` (final file of these settings), ``other`` (final file or run of other settings),
    ``partial`` (an epoch checkpoint to resume) or ``todo``."""
    run = _run(p, eps, out_dir)
    path = run.outputs[0]
    if os.path.isfile(path):
        return "done" if _header_identity(path) == run.identity else "other"
    return run.status()


def _evaluate(model, test_set, p: PretrainPreset, eps: float, device: str):
    """Held-out accuracy, clean and under PGD at ``eps`` (``own``) and at ``p.eval_eps`` (``common``)."""
    from training import engine

    ev = dict(engine.eval_options(p), device=device)
    own = engine.evaluate(model, test_set, eps=eps, **ev)
    common = (engine.evaluate(model, test_set, eps=p.eval_eps, **ev)
              if p.eval_eps > 0 and p.eval_eps != eps else own if p.eval_eps > 0 else None)
    return own, common


def _info(p: PretrainPreset, eps: float, train_set, test_set, own: dict, common: dict | None,
          history: dict, times: tuple[float, float], device: str, preset_name: str) -> dict:
    """The ``training`` entry of the source model's header (and of ``sources.json``)."""
    return {
        "dataset": p.data if p.data in BUILTIN_DATA else os.path.abspath(p.data),
        "eps_source": eps, "epochs": p.epochs, "lr": p.lr, "size": p.size,
        "n_classes": len(train_set.classes), "per_class": p.per_class,
        "n_train": len(train_set), "n_test": len(test_set),
        "attack_steps": p.attack_steps, "step_factor": p.step_factor, "batch_size": p.batch_size,
        "seed": p.seed, "data_seed": p.data_seed, "preset": preset_name,
        "source_acc": own["acc"], "source_robust_acc": own["robust_acc"], "eval_steps": p.eval_steps,
        "robust_n": own["robust_n"],
        "common_eps": p.eval_eps if common is not None else None,
        "source_common_robust_acc": common["robust_acc"] if common is not None else None,
        "train_acc": history["acc"][-1] if history["acc"] else None,
        "train_s": round(times[0], 1), "eval_s": round(times[1], 1), "device": str(device),
        "identity": identity(p, eps),
    }


def _save_source(path: str, model, p: PretrainPreset, eps: float, classes, info: dict,
                 preset_name: str) -> None:
    from fillcls import core

    header = CheckpointHeader(arch=p.arch, classes=tuple(classes), input_size=p.size,
                              mean=tuple(model.normalize.mean.flatten().tolist()),
                              std=tuple(model.normalize.std.flatten().tolist()),
                              model_id=f"source-{preset_name}-{p.arch}-eps{eps:g}-{digest(info['identity'])}",
                              training=info, kind="source")
    core.save_checkpoint(path, model.state_dict(), header)


def pretrain_one(p: PretrainPreset, eps: float, out_dir: str, train_set, test_set, *,
                 preset_name: str = "custom", resume: bool = True, device: str = "cpu",
                 log: Log = print, **fit_kwargs) -> dict:
    """Train (or skip / resume) the source model at ``eps``; return its header's training info.

    The run directory ``<out>/runs/eps<eps>`` follows :class:`training.runs.RunDir` (a run of
    other settings is refused unless ``resume=False``); the model goes to
    ``<out>/source_<arch>_eps<eps>.pt``."""
    import torch

    from fillcls import core
    from training import engine
    from training.config import FitConfig

    eps = float(eps)
    run = _run(p, eps, out_dir)
    path = run.outputs[0]
    st = status(p, eps, out_dir)
    if resume and st == "done":
        header, _, _ = core.read_checkpoint(path)
        log(f"eps {eps:g}: {path} finished before (source acc {header.training['source_acc']:.4f}), skipped")
        return dict(header.training, path=path, skipped=True)
    if resume and st == "other":
        raise PretrainError(f"{path} (or {run.path}) holds a source model of other settings; use "
                            "--no-resume to overwrite it, or another --out")
    run.begin({"preset": preset_name, "settings": p.to_dict()}, resume)
    with run.guard():
        log = run.tee(log)
        torch.manual_seed(p.seed)
        model = core.build_model(p.arch, len(train_set.classes))
        t0 = time.time()
        history = engine.fit(model, train_set, FitConfig.of(p, lr=p.lr, eps=eps), run_dir=run.path,
                             resume=resume, desc=f"pretrain eps{eps:g}", device=device, log=log, **fit_kwargs)
        t_train = time.time() - t0
        own, common = _evaluate(model, test_set, p, eps, device)
        info = _info(p, eps, train_set, test_set, own, common, history,
                     (t_train, time.time() - t0 - t_train), device, preset_name)
        _save_source(path, model, p, eps, train_set.classes, info, preset_name)
        log(f"eps {eps:g}: source acc {own['acc']:.4f}"
            + (f", robust acc {own['robust_acc']:.4f} at eps {eps:g}" if own["robust_acc"] is not None else "")
            + (f", {common['robust_acc']:.4f} at eps {p.eval_eps:g}" if common is not None else "")
            + f" [{info['train_s']:.0f}s train, {info['eval_s']:.0f}s eval] -> {path}")
    run.finish(info)
    return dict(info, path=path, skipped=False)


def pretrain_ladder(p: PretrainPreset, eps_values: Sequence[float], out_dir: str, *,
                    preset_name: str = "custom", resume: bool = True, device: str = "cpu",
                    cache_dir: str | None = None, log: Log = print, **fit_kwargs) -> list[dict]:
    """Train the source models of ``eps_values`` one after another (see :func:`pretrain_one`),
    updating ``<out_dir>/sources.json`` after each. Settings conflicts are found before anything
    trains."""
    eps_values = list(dict.fromkeys(float(e) for e in eps_values))
    if any(e < 0 for e in eps_values):
        raise ValueError("eps must be >= 0")
    if resume:
        clash = [e for e in eps_values if status(p, e, out_dir) == "other"]
        if clash:
            raise PretrainError(f"{out_dir} holds source models of other settings for eps "
                                f"{', '.join(f'{e:g}' for e in clash)}; use --no-resume to overwrite "
                                "them, or another --out")
    todo = [e for e in eps_values if not (resume and status(p, e, out_dir) == "done")]
    data = load_source_data(p, cache_dir, log) if todo else (None, None)
    results = []
    for e in eps_values:
        results.append(pretrain_one(p, e, out_dir, data[0], data[1], preset_name=preset_name,
                                    resume=resume, device=device, log=log, **fit_kwargs))
        write_summary(out_dir, results[-1:])  # after every model: partial ladders are listed too
    return results


def write_summary(out_dir: str, results: Sequence[dict]) -> str:
    """Merge ``results`` into ``<out_dir>/sources.json`` (one entry per file); return its path."""
    path = os.path.join(out_dir, "sources.json")
    try:
        entries = {e["path"]: e for e in read_json(path) or []}
    except (KeyError, TypeError):
        entries = {}
    for r in results:
        entries[r["path"]] = {k: v for k, v in r.items() if k != "skipped"}
    return write_json(path, sorted(entries.values(), key=lambda e: e["eps_source"]))


def summary_table(results: Sequence[dict]) -> str:
    """Markdown table: eps^s, clean / robust held-out source accuracy, training time."""
    rows = ["| eps^s | source acc (clean) | robust acc @ eps^s | robust acc @ common eps | train s |",
            "|---:|---:|---:|---:|---:|"]

    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}%"

    for r in sorted(results, key=lambda r: r["eps_source"]):
        common = (f"{pct(r.get('source_common_robust_acc'))} (eps {r['common_eps']:g})"
                  if r.get("common_eps") else "-")
        rows.append(f"| {r['eps_source']:g} | {pct(r['source_acc'])} | {pct(r['source_robust_acc'])} "
                    f"| {common} | {r.get('train_s', 0):.0f} |")
    return "\n".join(rows)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

DESCRIPTION = ("Pretrain source models for the transfer strategies: standard (eps 0) or L2-PGD "
               "adversarial training at each --eps on a source dataset (procedural fractals by "
               "default, or an ImageFolder), one model after another; finished models are skipped "
               "and an interrupted one resumes from its last epoch.")


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--eps", type=float, nargs="+", default=None, metavar="EPS",
                   help="eps^s of the models to train (L2, pixels in [0, 1]); default: 0, the "
                        "trainer preset's eps_source values and its AT->FT sweep (cpu: 0 0.05 0.25 0.5 1)")
    p.add_argument("--dry-run", action="store_true", help="list the models and their state, train nothing")
    g = add_run_options(p)
    g.add_argument("--out", default=None, metavar="DIR",
                   help="where source_<arch>_eps<eps>.pt go (default <runs>/sources/<preset>, the "
                        "trainer's default --source-dir)")
    add_settings_options(p, PretrainPreset, PRESETS, default="cpu", prefix="pt_",
                         preset_help="pretraining preset (default %(default)s); its name also picks the "
                                     "trainer preset whose source directory and eps values are used",
                         description="override one value of the pretraining preset")


def register(subparsers) -> None:
    """Add the ``pretrain`` command to ``python -m training``."""
    p = subparsers.add_parser("pretrain", help="train source models (ST / L2-PGD AT) on fractals or "
                                               "an ImageFolder", description=DESCRIPTION)
    _add_arguments(p)
    p.set_defaults(func=run_pretrain_from_args)


def preset_from_args(args: argparse.Namespace) -> PretrainPreset:
    """The preset named by ``--preset`` with ``--set`` and ``--<field>`` overrides applied."""
    return settings_from_args(args, PRESETS, "pt_")


def run_pretrain_from_args(args: argparse.Namespace) -> int:
    """``pretrain`` command: train the ladder, print the source accuracies; returns the exit code."""
    p = preset_from_args(args)
    eps_values = args.eps if args.eps else default_ladder(args.preset)
    out = args.out or os.path.join(args.runs, "sources", args.preset)
    cache = args.cache_dir or os.path.join(args.runs, "cache")
    if args.dry_run:
        for e in eps_values:
            print(f"{status(p, e, out):8s} eps {e:g}")
        return 0
    device = setup_device(args)
    print(f"source models -> {out} (eps {' '.join(f'{e:g}' for e in eps_values)}; data {p.data})")
    try:
        results = pretrain_ladder(p, eps_values, out, preset_name=args.preset, resume=args.resume,
                                  device=device, cache_dir=cache)
    except (RunError, CheckpointError, WriteError, PhotosMissingError, PhotoIndexError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary_table(results))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Stand-alone parser of ``python -m training.pretrain``."""
    p = argparse.ArgumentParser(prog="python -m training.pretrain", description=DESCRIPTION)
    _add_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return int(run_pretrain_from_args(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
