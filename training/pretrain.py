"""In-house source models: standard (eps^s = 0) or L2-PGD adversarial pretraining on a source dataset.

``python -m training pretrain --preset cpu`` trains the ladder of source models the transfer
strategies need (one per eps^s, one after another; finished ones are skipped, an interrupted one
resumes from its last epoch) and writes each as ``source_{arch}_eps{eps:g}.pt`` (project
checkpoint, header ``kind="source"``) into ``<runs>/sources/<preset>`` (``--out``), where
:func:`training.sources.find_source` and the trainer's ``--source-dir`` default look.

Source datasets: ``fractals`` (default; :mod:`training.data.fractals`, formula-driven, no
download) or the path of any ImageFolder (:mod:`training.data.folder`). Every model is evaluated
on held-out clean source images (``source_acc``) and under PGD at its own eps^s
(``source_robust_acc``) and at a common ``eval_eps`` (``source_common_robust_acc``); the values go
into the checkpoint header and ``<out>/sources.json``. Training is :func:`training.engine.fit`
(per-epoch checkpoint ``<out>/runs/eps<eps>/last.pt``).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from fillcls_ros.core import CheckpointError, CheckpointHeader
from training.config import cli_overrides, get_preset as _trainer_preset

Log = Callable[[str], None]


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class PretrainPreset:
    """Every value of a source pretraining (defaults: the ``cpu`` preset)."""

    arch: str = _f("resnet18", "architecture")
    data: str = _f("fractals", "'fractals' (procedural IFS fractals, no download) or the path of an "
                               "ImageFolder (root/<class>/<img>, or root/train + root/val)")
    size: int = _f(48, "input size in pixels (presets: the trainer preset's size)")
    n_classes: int = _f(24, "number of source classes (fractals: IFS; folder: first N classes, 0 = all)")
    per_class: int = _f(125, "training images per class (folder: at most, 0 = all)")
    test_per_class: int = _f(25, "held-out images per class for the source accuracy "
                                 "(folder without val/: 0 = 10%% of each class)")
    data_seed: int = _f(0, "seed of the source data (fractal classes and images, folder subsets)")
    epochs: int = _f(5, "training epochs")
    lr: float = _f(0.1, "initial learning rate (linear decay to 0)")
    batch_size: int = _f(64, "batch size")
    samples_per_epoch: int = _f(0, "samples drawn per epoch (0 = size of the training set)")
    momentum: float = _f(0.9, "SGD momentum")
    weight_decay: float = _f(5e-4, "SGD weight decay")
    balanced: bool = _f(True, "class-balanced sampling")
    hflip: bool = _f(True, "random horizontal flips")
    attack_steps: int = _f(3, "PGD steps of adversarial training (eps > 0)")
    step_factor: float = _f(2.5, "PGD step size = step_factor * eps / steps")
    eval_steps: int = _f(10, "PGD steps of the held-out robust accuracy")
    eval_max: int = _f(240, "attack at most this many held-out images (0 = all)")
    eval_eps: float = _f(0.25, "common eps at which every model of the ladder is also attacked (0 = skip)")
    eval_batch_size: int = _f(120, "evaluation batch size")
    seed: int = _f(0, "seed of model initialisation, sampling and attacks")

    def replace(self, **changes: Any) -> "PretrainPreset":
        from training.config import coerce

        names = {f.name for f in dataclasses.fields(self)}
        bad = set(changes) - names
        if bad:
            raise ValueError(f"unknown pretrain setting(s) {', '.join(sorted(bad))}")
        return dataclasses.replace(self, **{k: coerce(getattr(self, k), v) for k, v in changes.items()})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: ``cpu``: 24 fractal classes x 125 images at the input size of the trainer's ``cpu`` preset,
#: 6 epochs, 3-step PGD (instead of 10) for the adversarial models, so that the 5-model ladder
#: fits in ~25 min on 2 idle cores.
CPU = PretrainPreset(size=_trainer_preset("cpu").size, epochs=6)
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

#: Fields that change the trained weights (a finished model with other values is not reused).
_EVAL_FIELDS = ("eval_steps", "eval_max", "eval_eps", "eval_batch_size")


def default_ladder(preset_name: str) -> tuple[float, ...]:
    """eps^s values the trainer's preset of the same name needs: 0, its eps_source values and its
    AT->FT sweep (cpu: 0 0.05 0.25 0.5 1)."""
    from training.config import get_preset

    p = get_preset(preset_name)
    return tuple(sorted({0.0, *map(float, p.eps_source.values()), *map(float, p.sweep_eps)}))


def identity(p: PretrainPreset, eps: float) -> dict[str, Any]:
    """Settings that decide the weights of the eps model (data given as an absolute path)."""
    d = {k: v for k, v in p.to_dict().items() if k not in _EVAL_FIELDS}
    if d["data"] != "fractals":
        d["data"] = os.path.abspath(d["data"])
    d["eps"] = float(eps)
    return d


def _key(d: dict) -> str:
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def load_source_data(p: PretrainPreset, cache_dir: str | None = None, log: Log = print):
    """Train and held-out test :class:`~training.data.base.CropSet` of the source dataset."""
    if p.data == "fractals":
        from training.data.fractals import fractal_splits

        return fractal_splits(p.n_classes, p.per_class, p.test_per_class, p.size, seed=p.data_seed,
                              cache_dir=cache_dir, log=log)
    from training.data.folder import folder_splits

    return folder_splits(p.data, p.size, max_per_class=p.per_class, test_per_class=p.test_per_class,
                         max_classes=p.n_classes, seed=p.data_seed, cache_dir=cache_dir, log=log)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


class PretrainError(RuntimeError):
    """A source model cannot be (re)trained as asked (another model in the way, ...)."""


def run_dir_for(out_dir: str, eps: float) -> str:
    return os.path.join(out_dir, "runs", f"eps{float(eps):g}")


def status(p: PretrainPreset, eps: float, out_dir: str) -> str:
    """``done`` (final file of these settings), ``other`` (final file or run of other settings),
    ``partial`` (an epoch checkpoint to resume) or ``todo``."""
    from training.sources import source_path

    path = source_path(out_dir, p.arch, eps)
    ident = identity(p, eps)
    if os.path.isfile(path):
        try:
            from fillcls_ros.core import read_checkpoint

            header, _, _ = read_checkpoint(path)
            return "done" if (header.training or {}).get("identity") == ident else "other"
        except CheckpointError:
            return "other"
    rd = run_dir_for(out_dir, eps)
    try:
        with open(os.path.join(rd, "config.json")) as f:
            if json.load(f).get("identity") != ident:
                return "other"
    except (OSError, ValueError):
        pass
    return "partial" if os.path.isfile(os.path.join(rd, "last.pt")) else "todo"


def pretrain_one(p: PretrainPreset, eps: float, out_dir: str, train_set, test_set, *,
                 preset_name: str = "custom", resume: bool = True, device: str = "cpu",
                 log: Log = print, **fit_kwargs) -> dict:
    """Train (or skip / resume) the source model at ``eps``; return its header's training info."""
    from fillcls_ros import core
    from training import engine
    from training.sources import source_path

    import torch

    eps = float(eps)
    path = source_path(out_dir, p.arch, eps)
    rd = run_dir_for(out_dir, eps)
    ident = identity(p, eps)
    st = status(p, eps, out_dir)
    if resume and st == "done":
        header, _, _ = core.read_checkpoint(path)
        log(f"eps {eps:g}: {path} finished before (source acc {header.training['source_acc']:.4f}), skipped")
        return dict(header.training, path=path, skipped=True)
    if resume and st == "other":
        raise PretrainError(f"{path} (or {rd}) holds a source model of other settings; use --no-resume "
                            "to overwrite it, or another --out")
    if not resume:
        shutil.rmtree(rd, ignore_errors=True)
        if os.path.exists(path):
            os.remove(path)
    os.makedirs(rd, exist_ok=True)
    with open(os.path.join(rd, "config.json"), "w") as f:
        json.dump({"identity": ident, "preset": preset_name, "settings": p.to_dict()}, f, indent=1)
    log = engine.tee_log(log, os.path.join(rd, "train.log"))
    torch.manual_seed(p.seed)
    model = core.build_model(p.arch, len(train_set.classes))
    t0 = time.time()
    history = engine.fit(model, train_set, epochs=p.epochs, lr=p.lr, batch_size=p.batch_size,
                         samples_per_epoch=p.samples_per_epoch, momentum=p.momentum,
                         weight_decay=p.weight_decay, balanced=p.balanced, hflip=p.hflip, eps=eps,
                         attack_steps=p.attack_steps, step_factor=p.step_factor, seed=p.seed,
                         run_dir=rd, resume=resume, desc=f"pretrain eps{eps:g}", device=device,
                         log=log, **fit_kwargs)
    t_train = time.time() - t0
    ev = dict(batch_size=p.eval_batch_size, steps=p.eval_steps, step_factor=p.step_factor,
              max_attack=p.eval_max, seed=p.seed, device=device)
    own = engine.evaluate(model, test_set, eps=eps, **ev)
    common = (engine.evaluate(model, test_set, eps=p.eval_eps, **ev)
              if p.eval_eps > 0 and p.eval_eps != eps else own if p.eval_eps > 0 else None)
    t_eval = time.time() - t0 - t_train
    info = {
        "dataset": "fractals" if p.data == "fractals" else os.path.abspath(p.data),
        "eps_source": eps,
        "epochs": p.epochs,
        "lr": p.lr,
        "size": p.size,
        "n_classes": len(train_set.classes),
        "per_class": p.per_class,
        "n_train": len(train_set),
        "n_test": len(test_set),
        "attack_steps": p.attack_steps,
        "step_factor": p.step_factor,
        "batch_size": p.batch_size,
        "seed": p.seed,
        "data_seed": p.data_seed,
        "preset": preset_name,
        "source_acc": own["acc"],
        "source_robust_acc": own["robust_acc"],
        "eval_steps": p.eval_steps,
        "robust_n": own["robust_n"],
        "common_eps": p.eval_eps if common is not None else None,
        "source_common_robust_acc": common["robust_acc"] if common is not None else None,
        "train_acc": history["acc"][-1] if history["acc"] else None,
        "train_s": round(t_train, 1),
        "eval_s": round(t_eval, 1),
        "device": str(device),
        "identity": ident,
    }
    header = CheckpointHeader(arch=p.arch, classes=tuple(train_set.classes), input_size=p.size,
                              mean=tuple(model.normalize.mean.flatten().tolist()),
                              std=tuple(model.normalize.std.flatten().tolist()),
                              model_id=f"source-{preset_name}-{p.arch}-eps{eps:g}-{_key(ident)}",
                              training=info, kind="source")
    core.save_checkpoint(path, model.state_dict(), header)
    log(f"eps {eps:g}: source acc {own['acc']:.4f}"
        + (f", robust acc {own['robust_acc']:.4f} at eps {eps:g}" if own["robust_acc"] is not None else "")
        + (f", {common['robust_acc']:.4f} at eps {p.eval_eps:g}" if common is not None else "")
        + f" [{t_train:.0f}s train, {t_eval:.0f}s eval] -> {path}")
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
        with open(path) as f:
            entries = {e["path"]: e for e in json.load(f)}
    except (OSError, ValueError, KeyError, TypeError):
        entries = {}
    for r in results:
        entries[r["path"]] = {k: v for k, v in r.items() if k != "skipped"}
    tmp = f"{path}.tmp{os.getpid()}"
    os.makedirs(out_dir, exist_ok=True)
    with open(tmp, "w") as f:
        json.dump(sorted(entries.values(), key=lambda e: e["eps_source"]), f, indent=1)
    os.replace(tmp, path)
    return path


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
    p.add_argument("--preset", choices=list(PRESETS), default="cpu",
                   help="pretraining preset (default %(default)s); its name also picks the trainer "
                        "preset whose source directory and eps values are used")
    p.add_argument("--eps", type=float, nargs="+", default=None, metavar="EPS",
                   help="eps^s of the models to train (L2, pixels in [0, 1]); default: 0, the "
                        "trainer preset's eps_source values and its AT->FT sweep (cpu: 0 0.05 0.25 0.5 1)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="where source_<arch>_eps<eps>.pt go (default <runs>/sources/<preset>, the "
                        "trainer's default --source-dir)")
    p.add_argument("--runs", default="runs", metavar="DIR", help="root of the run directories "
                                                                  "(default %(default)s)")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="cache of generated / decoded source data (default <runs>/cache)")
    p.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda ... (default auto)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="skip finished models and resume interrupted ones (default); --no-resume "
                        "retrains (overwrites) them")
    p.add_argument("--dry-run", action="store_true", help="list the models and their state, train nothing")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a preset value (repeatable), e.g. --set epochs=3")
    g = p.add_argument_group("preset values", "override one value of the pretraining preset")
    for f in dataclasses.fields(PretrainPreset):
        vals = "; ".join(f"{n}: {getattr(pr, f.name)}" for n, pr in PRESETS.items())
        g.add_argument(f"--{f.name.replace('_', '-')}", dest=f"pt_{f.name}", default=None,
                       metavar=type(f.default).__name__.upper(),
                       help=f"{f.metadata['help']} [{vals}]")


def register(subparsers) -> None:
    """Add the ``pretrain`` command to ``python -m training``."""
    p = subparsers.add_parser("pretrain", help="train source models (ST / L2-PGD AT) on fractals or "
                                               "an ImageFolder", description=DESCRIPTION)
    _add_arguments(p)
    p.set_defaults(func=run_pretrain_from_args)


def preset_from_args(args: argparse.Namespace) -> PretrainPreset:
    """The preset named by ``--preset`` with ``--set`` and ``--<field>`` overrides applied."""
    changes = cli_overrides(args, PretrainPreset, "pt_")
    try:
        return PRESETS[args.preset].replace(**changes)
    except ValueError as exc:
        raise SystemExit(f"bad pretrain setting: {exc}") from exc


def run_pretrain_from_args(args: argparse.Namespace) -> int:
    """``pretrain`` command: train the ladder, print the source accuracies; returns the exit code."""
    import torch

    p = preset_from_args(args)
    eps_values = args.eps if args.eps else default_ladder(args.preset)
    out = args.out or os.path.join(args.runs, "sources", args.preset)
    cache = args.cache_dir or os.path.join(args.runs, "cache")
    if args.dry_run:
        for e in eps_values:
            print(f"{status(p, e, out):8s} eps {e:g}")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    print(f"source models -> {out} (eps {' '.join(f'{e:g}' for e in eps_values)}; data {p.data})")
    try:
        results = pretrain_ladder(p, eps_values, out, preset_name=args.preset, resume=args.resume,
                                  device=device, cache_dir=cache)
    except (PretrainError, CheckpointError) as exc:
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
