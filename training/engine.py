"""The one training routine, the evaluation, and the runs built on them.

* :func:`fit` trains a model in place (SGD, linear decay to 0, cross-entropy, class-balanced
  sampling, optional L2-PGD adversarial training, the first ``L`` layers fixed with their
  BatchNorm statistics frozen), checkpointing every epoch to ``run_dir/last.pt`` and resuming
  from it;
* :func:`evaluate` gives overall / per-container / per-class accuracy, the confusion matrix and
  the accuracy under a test-time PGD attack;
* :func:`run_one` is one run of a :class:`training.config.RunConfig` in its run directory
  (``config.json``, ``last.pt``, ``result.json``, ``model.pt``); :func:`plan_study` and
  :func:`run_many` make the six-strategy x split table and the sweeps of Fig. 5.

Data are :class:`training.data.base.CropSet` (uint8 in memory); batches are gathered from the
uint8 tensor and converted on the fly, so the pipeline costs next to nothing beside the model.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fillcls_ros import core
from training.attack import eval_mode, pgd
from training.config import STRATEGIES, Preset, RunConfig, resolve_run
from training.data.base import CropSet
from training.sources import SourceSpec, find_source, load_source_model

STATE_FORMAT = "fillcls-train-state"
Log = Callable[[str], None]


class RunError(RuntimeError):
    """A run cannot start: missing source model, run directory holding another config, ..."""


class MissingSource(RunError):
    """No source model file for a transfer run (``eps_source``, ``path``, ``cfg`` say which)."""

    def __init__(self, message: str, cfg: RunConfig, path: str):
        super().__init__(message)
        self.cfg, self.path, self.eps_source = cfg, path, float(cfg.eps_source)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def freeze_layers(model: nn.Module, fixed_layers: int) -> list[nn.Module]:
    """Fix the first ``fixed_layers`` (L) blocks of ``model``: no gradient, BatchNorm frozen.

    Returns the fixed modules; :func:`set_train_mode` keeps them in eval mode.
    """
    mods = core.fixed_modules(model, fixed_layers) if fixed_layers else []
    for m in mods:
        for p in m.parameters():
            p.requires_grad_(False)
    return mods


def set_train_mode(model: nn.Module, fixed: Sequence[nn.Module]) -> None:
    """``model.train()`` except the fixed modules, which stay in eval mode (frozen BN statistics)."""
    model.train()
    for m in fixed:
        m.eval()


def _generator(seed: int, epoch: int, stream: int, device: str | torch.device = "cpu") -> torch.Generator:
    """An independent generator per (seed, epoch, stream): an epoch replays identically on resume."""
    g = torch.Generator(device=device)
    g.manual_seed((int(seed) * 1_000_003 + int(epoch) * 7_919 + stream * 104_729) % (2**63))
    return g


def epoch_batches(labels: torch.Tensor, n_samples: int, batch_size: int, balanced: bool,
                  generator: torch.Generator) -> list[torch.Tensor]:
    """Index batches of one epoch: ``n_samples`` draws, class-balanced (with replacement, each
    image drawn with probability inversely proportional to its class frequency) or shuffled.

    A last batch of one image is dropped (BatchNorm needs two).
    """
    n = len(labels)
    if balanced:
        counts = torch.bincount(labels).double()
        weights = 1.0 / counts[labels]
        idx = torch.multinomial(weights, n_samples, replacement=True, generator=generator)
    else:
        reps = math.ceil(n_samples / n)
        idx = torch.cat([torch.randperm(n, generator=generator) for _ in range(reps)])[:n_samples]
    batches = list(torch.split(idx, batch_size))
    if len(batches) > 1 and len(batches[-1]) < 2:
        batches.pop()
    return batches


def make_batch(train_set: CropSet, idx: torch.Tensor, hflip: bool, generator: torch.Generator,
               device: str | torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather ``idx`` from the uint8 images, flip half of them (``hflip``), convert to [0, 1] floats."""
    images = train_set.images[idx]
    if hflip:
        flip = torch.rand(len(idx), generator=generator) < 0.5
        images[flip] = images[flip].flip(-1)
    x = core.to_float(images.to(device, non_blocking=True))
    return x, train_set.labels[idx].to(device, non_blocking=True)


def _atomic_save(obj: Any, path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def fit(model, train_set, *, epochs, lr, batch_size, samples_per_epoch=0, momentum=0.9, weight_decay=5e-4,
        balanced=True, hflip=True, eps=0.0, attack_steps=10, step_factor=2.5, fixed_layers=0,
        seed=0, run_dir=None, resume=True, desc="train", device="cpu", log=print,
        on_step: Callable[[int, int, float], None] | None = None,
        on_epoch: Callable[[int, dict], None] | None = None) -> dict:
    """Train ``model`` in place on ``train_set`` (a :class:`CropSet`); return the history.

    SGD (``momentum``, ``weight_decay``) from ``lr`` decaying linearly to 0 over all steps,
    cross-entropy, ``samples_per_epoch`` draws per epoch (0: the size of ``train_set``) in batches
    of ``batch_size``, class-balanced when ``balanced``, random horizontal flips when ``hflip``.
    With ``eps > 0`` every batch is replaced by its L2-PGD adversarial version (``attack_steps``
    steps of ``step_factor * eps / attack_steps``, model in eval mode during the attack). The first
    ``fixed_layers`` blocks get no gradient and keep their BatchNorm statistics. Randomness comes
    from per-epoch generators derived from ``seed`` (initialise the model yourself).

    With ``run_dir``, ``run_dir/last.pt`` (model, optimizer, scheduler, RNG states, epoch, history)
    is written after every epoch, and with ``resume`` a run continues from it (a kill loses at most
    the epoch in progress; the result equals an uninterrupted run). ``on_step(epoch, step, loss)``
    and ``on_epoch(epoch, history)`` are called after each step / checkpoint (epochs from 0).

    Returns ``{"epoch", "loss", "acc", "lr", "time", "img_per_s"}`` (lists, one entry per epoch;
    ``acc`` on the training batches, adversarial ones when ``eps > 0``) plus ``resumed_from``.
    """
    device = torch.device(device)
    model.to(device)
    fixed = freeze_layers(model, int(fixed_layers))
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameter left (fixed_layers too large?)")
    n_train = len(train_set)
    if n_train < 2:
        raise ValueError(f"need at least 2 training images, got {n_train}")
    n_samples = int(samples_per_epoch) or n_train
    steps_per_epoch = len(epoch_batches(train_set.labels, n_samples, batch_size, balanced,
                                        _generator(seed, 0, 0)))
    total_steps = steps_per_epoch * int(epochs)
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: max(0.0, 1.0 - t / total_steps))
    meta = {"n_train": n_train, "epochs": int(epochs), "lr": float(lr), "batch_size": int(batch_size),
            "samples_per_epoch": n_samples, "momentum": float(momentum),
            "weight_decay": float(weight_decay), "balanced": bool(balanced), "hflip": bool(hflip),
            "eps": float(eps), "attack_steps": int(attack_steps), "step_factor": float(step_factor),
            "fixed_layers": int(fixed_layers), "seed": int(seed)}
    history: dict[str, Any] = {k: [] for k in ("epoch", "loss", "acc", "lr", "time", "img_per_s")}
    start = 0
    state_path = os.path.join(os.fspath(run_dir), "last.pt") if run_dir else None
    if state_path and resume and os.path.isfile(state_path):
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if state.get("format") != STATE_FORMAT:
            raise RunError(f"{state_path}: not a training state file")
        if state["meta"] != meta:
            diff = {k: (state["meta"].get(k), v) for k, v in meta.items() if state["meta"].get(k) != v}
            raise RunError(f"{state_path} was written with other settings {diff} (saved, now); "
                           "delete it or train without resume to start over")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        history = state["history"]
        start = int(state["epoch"])
        if start < epochs:
            log(f"{desc}: resuming after epoch {start}/{epochs} from {state_path}")
    history["resumed_from"] = start

    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        tqdm = None
    for epoch in range(start, int(epochs)):
        g = _generator(seed, epoch, 0)
        g_attack = g if device.type == "cpu" else _generator(seed, epoch, 1, device)
        batches = epoch_batches(train_set.labels, n_samples, batch_size, balanced, g)
        set_train_mode(model, fixed)
        bar = tqdm(total=len(batches), desc=f"{desc} {epoch + 1}/{epochs}", leave=False,
                   disable=None, unit="batch") if tqdm else None
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        seen = 0
        lr_epoch = optimizer.param_groups[0]["lr"]
        for step, idx in enumerate(batches):
            x, y = make_batch(train_set, idx, hflip, g, device)
            if eps > 0:
                x = x + pgd(model, x, y, eps, attack_steps, step_factor=step_factor, generator=g_attack)
            out = model(x)
            loss = F.cross_entropy(out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach() * len(y)
            correct += (out.detach().argmax(1) == y).sum()
            seen += len(y)
            if bar is not None:
                bar.update(1)
            if on_step is not None:
                on_step(epoch, step, float(loss.detach()))
        if bar is not None:
            bar.close()
        dt = time.perf_counter() - t0
        epoch_loss = float(loss_sum) / seen
        if not math.isfinite(epoch_loss):
            raise RunError(f"{desc}: training diverged (loss {epoch_loss}) in epoch {epoch + 1}")
        for key, value in (("epoch", epoch + 1), ("loss", epoch_loss), ("acc", int(correct) / seen),
                           ("lr", lr_epoch), ("time", dt), ("img_per_s", seen / dt)):
            history[key].append(value)
        log(f"{desc} epoch {epoch + 1}/{epochs}: loss {epoch_loss:.4f} acc {int(correct) / seen:.3f} "
            f"lr {lr_epoch:.4g} {dt:.1f}s {seen / dt:.0f} img/s")
        if state_path:
            os.makedirs(os.path.dirname(state_path), exist_ok=True)
            _atomic_save({"format": STATE_FORMAT, "epoch": epoch + 1, "meta": meta,
                          "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "scheduler": scheduler.state_dict(), "rng": _rng_state(),
                          "history": {k: v for k, v in history.items() if k != "resumed_from"}},
                         state_path)
        if on_epoch is not None:
            on_epoch(epoch, history)
    optimizer.zero_grad(set_to_none=True)
    model.eval()
    return history


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def _container_key(c: str) -> tuple:
    """Natural order: C2 before C10."""
    digits = "".join(ch for ch in c if ch.isdigit())
    return (c.rstrip("0123456789"), int(digits) if digits else -1, c)


def evaluate(model, test_set, *, batch_size=128, eps=0.0, steps=10, step_factor=2.5, max_attack=0,
             seed=0, device="cpu") -> dict:
    """Accuracy of ``model`` on ``test_set`` (a :class:`CropSet`), clean and under L2 PGD.

    Returns ``n``, ``acc``, ``per_container`` ({container: acc}), ``container_n``, ``per_class``
    ({class: recall}), ``confusion`` (rows: true class, columns: predicted, list of lists) and,
    with ``eps > 0``, ``robust_acc`` / ``robust_per_container`` under a ``steps``-step PGD attack
    on at most ``max_attack`` images (random subset drawn with ``seed``; 0 = all), else
    ``robust_acc = None``. The model's train/eval flags are restored afterwards.
    """
    device = torch.device(device)
    model.to(device)
    n, k = len(test_set), len(test_set.classes)
    labels = test_set.labels
    preds = []
    with eval_mode(model), torch.no_grad():
        for s in range(0, n, batch_size):
            x = core.to_float(test_set.images[s:s + batch_size].to(device))
            preds.append(model(x).argmax(1).cpu())
    pred = torch.cat(preds) if preds else torch.empty(0, dtype=torch.int64)
    correct = pred == labels
    containers = list(test_set.containers)
    names = sorted(set(containers), key=_container_key)

    def by_container(ok: torch.Tensor, rows: Sequence[int]) -> dict[str, float]:
        out = {}
        for c in names:
            sel = [i for i in rows if containers[i] == c]
            if sel:
                out[c] = float(ok[sel].float().mean())
        return out

    confusion = torch.bincount(labels * k + pred, minlength=k * k).view(k, k)
    per_class = {test_set.classes[i]: (float(confusion[i, i]) / float(confusion[i].sum()))
                 for i in range(k) if int(confusion[i].sum())}
    result = {
        "n": n,
        "acc": float(correct.float().mean()) if n else float("nan"),
        "per_container": by_container(correct, range(n)),
        "container_n": {c: containers.count(c) for c in names},
        "per_class": per_class,
        "classes": list(test_set.classes),
        "confusion": confusion.tolist(),
        "eps": float(eps),
        "robust_acc": None,
        "robust_per_container": None,
        "robust_n": 0,
    }
    if eps > 0 and n:
        if max_attack and max_attack < n:
            rows = sorted(torch.randperm(n, generator=_generator(seed, 0, 2))[:max_attack].tolist())
        else:
            rows = list(range(n))
        g = _generator(seed, 0, 3, device)
        ok = torch.zeros(n, dtype=torch.bool)
        for s in range(0, len(rows), batch_size):
            idx = torch.tensor(rows[s:s + batch_size])
            x = core.to_float(test_set.images[idx].to(device))
            y = labels[idx].to(device)
            x_adv = x + pgd(model, x, y, eps, steps, step_factor=step_factor, generator=g)
            with eval_mode(model), torch.no_grad():
                ok[idx] = (model(x_adv).argmax(1) == y).cpu()
        result["robust_acc"] = float(ok[rows].float().mean())
        result["robust_per_container"] = by_container(ok, rows)
        result["robust_n"] = len(rows)
    return result


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------


def run_dir_for(root: str | os.PathLike, cfg: RunConfig) -> str:
    """``<root>/<split>/<run name>``."""
    return os.path.join(os.fspath(root), cfg.split, cfg.name)


def _read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_json(path: str, obj: Any) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=False)
    os.replace(tmp, path)


def load_result(run_dir: str, cfg: RunConfig | None = None) -> dict | None:
    """``run_dir/result.json`` if present (and made by a config equal to ``cfg``), else None."""
    res = _read_json(os.path.join(run_dir, "result.json"))
    if res is None or (cfg is not None and res.get("identity") != _canon(cfg.identity())):
        return None
    return res


def _canon(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(obj))


def run_status(root: str, cfg: RunConfig) -> str:
    """``done``, ``partial`` (a last.pt to resume), ``other`` (another config) or ``todo``."""
    d = run_dir_for(root, cfg)
    if load_result(d, cfg) is not None:
        return "done"
    saved = _read_json(os.path.join(d, "config.json"))
    if saved is not None and _canon(RunConfig.from_dict(saved).identity()) != _canon(cfg.identity()):
        return "other"
    return "partial" if os.path.isfile(os.path.join(d, "last.pt")) else "todo"


def resolve_source(cfg: RunConfig, source_dir: str | os.PathLike | None = None,
                   explicit: SourceSpec | None = None) -> SourceSpec | None:
    """The source model of a transfer run (None when training from scratch).

    ``explicit`` (``--source``) wins; otherwise ``find_source(source_dir, arch, eps_source)``.
    Raises :class:`RunError` saying which pretrain command makes a missing source.
    """
    if not STRATEGIES[cfg.strategy].transfer:
        return None
    if explicit is not None:
        if explicit.arch != cfg.arch:
            raise RunError(f"source {explicit.path} is a {explicit.arch}, the run needs {cfg.arch}")
        if float(explicit.eps_source) != float(cfg.eps_source):
            raise RunError(f"{cfg.strategy} on {cfg.split} needs eps_source={cfg.eps_source:g} but "
                           f"--source {explicit.path} has eps_source={explicit.eps_source:g}")
        return explicit
    if source_dir is None:
        raise RunError(f"{cfg.strategy} needs a source model: give --source-dir or --source")
    try:
        return find_source(source_dir, cfg.arch, cfg.eps_source)
    except core.CheckpointError as exc:
        raise MissingSource(
            f"{cfg.strategy} on {cfg.split} needs a {cfg.arch} source model with eps_source="
            f"{cfg.eps_source:g}: {exc} (or pass --source PATH --eps-source {cfg.eps_source:g})",
            cfg, os.fspath(source_dir)) from exc


def build_run_model(cfg: RunConfig, source: SourceSpec | None) -> core.FillingClassifier:
    """The starting model of a run: random (ST, AT) or the source model with a fresh 4-class head."""
    torch.manual_seed(int(cfg.settings.get("seed", 0)))
    if STRATEGIES[cfg.strategy].transfer:
        if source is None:
            raise RunError(f"{cfg.strategy} needs a source model")
        model = load_source_model(source)
        core.replace_head(model, len(core.CLASSES))
        return model
    return core.build_model(cfg.arch, len(core.CLASSES))


def tee_log(log: Log, path: str) -> Log:
    """``log`` that also appends each message, time-stamped, to the file ``path``."""
    def out(msg: str) -> None:
        log(msg)
        with open(path, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")
    return out


def run_one(cfg: RunConfig, train_set: CropSet, test_set: CropSet, run_dir: str, *,
            source: SourceSpec | None = None, resume: bool = True, device: str = "cpu",
            log: Log = print, **fit_kwargs) -> dict:
    """Train, evaluate and save one run in ``run_dir``; return its result (also ``result.json``).

    A finished run (``result.json`` of the same config) is not redone when ``resume``; an
    interrupted one continues from ``last.pt``. ``resume=False`` starts over. A run directory that
    holds another config is an error unless ``resume=False``. Writes ``config.json``, ``last.pt``
    (per epoch), ``model.pt`` (the final model in the node's checkpoint format), ``result.json``
    and ``train.log``.
    """
    os.makedirs(run_dir, exist_ok=True)
    if resume:
        done = load_result(run_dir, cfg)
        if done is not None:
            log(f"{cfg.split} {cfg.name}: finished before (acc {done['metrics']['acc']:.4f}), skipped")
            return done
        saved = _read_json(os.path.join(run_dir, "config.json"))
        if saved is not None and _canon(RunConfig.from_dict(saved).identity()) != _canon(cfg.identity()):
            raise RunError(f"{run_dir} holds a run of another config; use --no-resume to overwrite "
                           "it, or another --runs / --tag")
    else:
        for name in ("last.pt", "result.json", "model.pt", "train.log"):
            if os.path.exists(os.path.join(run_dir, name)):
                os.remove(os.path.join(run_dir, name))
    if source is not None:
        cfg.source = source.to_dict()
    _write_json(os.path.join(run_dir, "config.json"), cfg.to_dict())
    log = tee_log(log, os.path.join(run_dir, "train.log"))
    s = cfg.settings
    model = build_run_model(cfg, source)
    t0 = time.time()
    history = fit(model, train_set, epochs=s["epochs"], lr=cfg.lr, batch_size=s["batch_size"],
                  samples_per_epoch=s["samples_per_epoch"], momentum=s["momentum"],
                  weight_decay=s["weight_decay"], balanced=s["balanced"], hflip=s["hflip"],
                  eps=cfg.eps_target, attack_steps=s["attack_steps"], step_factor=s["step_factor"],
                  fixed_layers=cfg.fixed_layers, seed=s["seed"], run_dir=run_dir, resume=resume,
                  desc=f"{cfg.split} {cfg.name}", device=device, log=log, **fit_kwargs)
    t_train = time.time() - t0
    metrics = evaluate(model, test_set, batch_size=s["eval_batch_size"], eps=cfg.eval_eps,
                       steps=s["eval_steps"], step_factor=s["step_factor"], max_attack=s["eval_max"],
                       seed=s["seed"], device=device)
    t_eval = time.time() - t0 - t_train
    header = core.CheckpointHeader(arch=cfg.arch, input_size=cfg.size,
                                   mean=tuple(model.normalize.mean.flatten().tolist()),
                                   std=tuple(model.normalize.std.flatten().tolist()),
                                   model_id=model_id(cfg), training=cfg.training_header())
    core.save_checkpoint(os.path.join(run_dir, "model.pt"), model.state_dict(), header)
    robust = metrics["robust_acc"]
    log(f"{cfg.split} {cfg.name}: test acc {metrics['acc']:.4f}"
        + (f", robust acc {robust:.4f} (eps {cfg.eval_eps:g})" if robust is not None else "")
        + f" [{t_train:.0f}s train, {t_eval:.0f}s eval]")
    result = {"config": cfg.to_dict(), "identity": _canon(cfg.identity()), "metrics": metrics,
              "history": history, "n_train": len(train_set), "n_test": len(test_set),
              "train_s": t_train, "eval_s": t_eval, "device": str(device),
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    _write_json(os.path.join(run_dir, "result.json"), result)
    return result


def model_id(cfg: RunConfig) -> str:
    """A readable id of a run's model, e.g. ``cpu-S1-AT-FT_L1_es0.05_et0``."""
    return f"{cfg.preset}-{cfg.split}-{cfg.name}"


# --------------------------------------------------------------------------------------------
# Data and studies
# --------------------------------------------------------------------------------------------

_DATA_CACHE: dict[tuple, CropSet] = {}


def _subset(cs: CropSet, limit: int, seed: int) -> CropSet:
    if not limit or len(cs) <= limit:
        return cs
    idx = torch.randperm(len(cs), generator=torch.Generator().manual_seed(seed))[:limit]
    return cs.subset(idx.sort().values)


def load_split(preset: Preset, split: str, cache_dir: str | None = None) -> tuple[CropSet, CropSet]:
    """Train and test CropSets of ``split`` for ``preset`` (``max_train`` / ``max_test`` applied).

    ``preset.data == "synthetic"``: procedural crops (``training.data.make_cropset``), else a crop
    manifest (``training.data.load_manifest``). The full set is cached in memory per process.
    """
    from training import data as tdata  # imported lazily: the data package is optional for tests

    key = (preset.data, preset.size, preset.n_samples, preset.data_seed)
    if key not in _DATA_CACHE:
        if preset.data == "synthetic":
            _DATA_CACHE[key] = tdata.make_cropset(preset.n_samples, preset.size, seed=preset.data_seed,
                                                  cache_dir=cache_dir)
        else:
            _DATA_CACHE[key] = tdata.load_manifest(preset.data, preset.size)
    train, test = tdata.split_cropset(_DATA_CACHE[key], split)
    return (_subset(train, preset.max_train, preset.data_seed),
            _subset(test, preset.max_test, preset.data_seed + 1))


def plan_study(preset_name: str, preset: Preset, splits: Iterable[str], main: bool = True,
               sweep_layers: bool = True, sweep_eps: bool = True) -> list[RunConfig]:
    """Run configs of a study: the six strategies on every split, then the Fig. 5 sweeps
    (ST->FT over ``sweep_layers`` on ``sweep_layers_splits``, AT->FT over ``sweep_eps`` on
    ``sweep_eps_splits``, both restricted to ``splits``). Runs sharing a directory appear once."""
    splits = list(splits)
    cfgs: list[RunConfig] = []
    if main:
        cfgs += [resolve_run(preset_name, preset, sp, st, group="main") for sp in splits for st in STRATEGIES]
    if sweep_layers:
        cfgs += [resolve_run(preset_name, preset, sp, "ST-FT", fixed_layers=L, group="sweep-layers")
                 for sp in preset.sweep_layers_splits if sp in splits for L in preset.sweep_layers]
    if sweep_eps:
        cfgs += [resolve_run(preset_name, preset, sp, "AT-FT", eps_source=e, group="sweep-eps")
                 for sp in preset.sweep_eps_splits if sp in splits for e in preset.sweep_eps]
    seen, out = set(), []
    for c in cfgs:
        if (c.split, c.name) not in seen:
            seen.add((c.split, c.name))
            out.append(c)
    return out


def run_many(cfgs: Sequence[RunConfig], root: str, *, source_dir: str | None = None,
             source: SourceSpec | None = None, resume: bool = True, device: str = "cpu",
             cache_dir: str | None = None, log: Log = print,
             data: Callable[[Preset, str], tuple[CropSet, CropSet]] | None = None) -> list[dict]:
    """Run ``cfgs`` in order under ``root`` (finished ones are skipped).

    All source models are looked up first, so a missing one stops the study before any training.
    ``data(preset, split)`` gives (train, test); default :func:`load_split`.
    """
    sources, missing = {}, {}
    for c in cfgs:
        try:
            sources[(c.split, c.name)] = resolve_source(c, source_dir, source)
        except MissingSource as exc:
            missing.setdefault((c.arch, exc.eps_source), []).append(f"{c.split} {c.strategy}")
    if missing:
        eps = " ".join(f"{e:g}" for e in sorted({e for _, e in missing}))
        lines = [f"source_{a}_eps{e:g}.pt (for {', '.join(dict.fromkeys(runs))})"
                 for (a, e), runs in sorted(missing.items())]
        preset = cfgs[0].preset
        raise RunError(f"missing source models in {source_dir}:\n  " + "\n  ".join(lines)
                       + f"\nmake them with `python -m training pretrain --preset {preset} --eps {eps} "
                       f"--out {source_dir}` (or give --source-dir DIR / --source PATH --eps-source EPS)")
    results = []
    t_start = time.time()
    for i, c in enumerate(cfgs):
        preset = Preset(**{k: tuple(v) if isinstance(v, list) else v for k, v in c.settings.items()})
        train_set, test_set = (data or (lambda p, sp: load_split(p, sp, cache_dir)))(preset, c.split)
        log(f"[{i + 1}/{len(cfgs)}] {c.split} {c.name} ({c.group}): {len(train_set)} train / "
            f"{len(test_set)} test images, {time.time() - t_start:.0f}s elapsed")
        results.append(run_one(c, train_set, test_set, run_dir_for(root, c),
                               source=sources[(c.split, c.name)], resume=resume, device=device, log=log))
    return results
