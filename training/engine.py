"""The training loop, the evaluation, and the runs built on them (shaped like torchvision's
classification references).

* :class:`training.config.FitConfig`: the loop's typed settings (the shared recipe plus this
  run's ``lr``, ``eps`` and ``fixed_layers``);
* :func:`train_one_epoch` (SGD steps over one epoch's batches, clean or L2-PGD adversarial),
  :func:`evaluate` (overall / per-container / per-class accuracy, the confusion matrix and the
  accuracy under a test-time PGD attack) and :func:`fit`, the short driver around them
  (optimizer and linear-decay scheduler, resume from ``run_dir/last.pt``, per-epoch checkpoint and
  log line);
* :func:`run_one` is one run of a :class:`training.config.RunConfig` in its
  :class:`training.runs.RunDir` (``config.json``, ``last.pt``, ``result.json``, ``model.pt``);
  :func:`plan_study` and :func:`run_many` make the six-strategy x split table and the sweeps of
  Fig. 5.

Data are :class:`training.data.base.CropSet` (uint8 in memory); batches are gathered from the
uint8 tensor and converted on the fly, so the pipeline costs next to nothing beside the model.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fillcls import core
from training.attack import eval_mode, pgd
from training.config import LAYER_READINGS, STRATEGIES, FitConfig, Preset, RunConfig, resolve_run  # noqa: F401
from training.data.base import CropSet
from training.runs import RunDir, RunError, canon, read_json, torch_save  # noqa: F401 (RunError: re-exported)
from training import assets
from training.sources import SourceSpec, load_source_model

STATE_FORMAT = "fillcls-train-state"
Log = Callable[[str], None]
StepHook = Callable[[int, int, float], None]
EpochHook = Callable[[int, dict], None]


class MissingSource(RunError):
    """No source model file for a transfer run (``eps_source``, ``path``, ``cfg``, ``name`` say which)."""

    def __init__(self, message: str, cfg: RunConfig, path: str, name: str = ""):
        super().__init__(message)
        self.cfg, self.path, self.eps_source, self.name = cfg, path, float(cfg.eps_source), name


def _spec(d: dict | None) -> SourceSpec | None:
    return SourceSpec(**d) if d else None


class DataError(RunError):
    """The data of a run cannot be loaded (bad manifest, missing or corrupt images ...)."""


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def fixed_modules(model: nn.Module, fixed_layers: int, reading: str = "blocks") -> list[nn.Module]:
    """The modules of the first ``fixed_layers`` (L) layers of ``model.net`` under ``reading``
    (:data:`training.config.LAYER_READINGS`; ``blocks`` is :func:`fillcls.core.fixed_modules`)."""
    groups = LAYER_READINGS[reading]
    if not 0 <= fixed_layers <= len(groups):
        raise ValueError(f"L (fixed layers) must be in 0..{len(groups)}, got {fixed_layers}")
    return [getattr(model.net, name) for group in groups[:fixed_layers] for name in group]


def freeze_layers(model: nn.Module, fixed_layers: int, reading: str = "blocks") -> list[nn.Module]:
    """Fix the first ``fixed_layers`` (L) layers of ``model`` (read as ``reading``): no gradient,
    BatchNorm frozen. Returns the fixed modules; :func:`set_train_mode` keeps them in eval mode.
    """
    mods = fixed_modules(model, fixed_layers, reading) if fixed_layers else []
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
               device: str | torch.device, exposure: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather ``idx`` from the uint8 images, flip half of them (``hflip``), convert to [0, 1]
    floats, scale each by a random exposure factor in [1/(1+e), 1+e] (``exposure`` e > 0; both
    drawn from ``generator``, which is not touched for what is off)."""
    images = train_set.images[idx]
    if hflip:
        flip = torch.rand(len(idx), generator=generator) < 0.5
        images[flip] = images[flip].flip(-1)
    x = core.to_float(images.to(device, non_blocking=True))
    if exposure > 0:
        log_range = math.log1p(exposure)
        gain = torch.exp((torch.rand(len(idx), generator=generator) * 2 - 1) * log_range)
        x = (x * gain.view(-1, 1, 1, 1).to(device)).clamp_(0, 1)
    return x, train_set.labels[idx].to(device, non_blocking=True)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _progress(total: int, desc: str):
    """A tqdm bar on a terminal (None without tqdm)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, desc=desc, leave=False, disable=None, unit="batch")


def train_one_epoch(model: nn.Module, train_set: CropSet, batches: Sequence[torch.Tensor],
                    optimizer: torch.optim.Optimizer, scheduler, cfg: FitConfig, *,
                    generator: torch.Generator, attack_generator: torch.Generator,
                    device: torch.device, fixed: Sequence[nn.Module] = (), epoch: int = 0,
                    desc: str = "train", on_step: StepHook | None = None) -> dict[str, float]:
    """One epoch of SGD steps over ``batches`` (index tensors into ``train_set``).

    Each batch is gathered, flipped (``cfg.hflip``) and exposed (``cfg.exposure``; both drawn
    from ``generator``) and, with
    ``cfg.eps > 0``, replaced by its L2-PGD version (``attack_generator``; the model is in eval
    mode during the attack). The scheduler steps after every batch. ``on_step(epoch, step, loss)``
    is called after each step. Returns ``{"loss", "acc", "seen", "time"}`` (on the trained
    batches, adversarial ones when ``eps > 0``).
    """
    set_train_mode(model, fixed)
    bar = _progress(len(batches), f"{desc} {epoch + 1}/{cfg.epochs}")
    t0 = time.perf_counter()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    for step, idx in enumerate(batches):
        x, y = make_batch(train_set, idx, cfg.hflip, generator, device, cfg.exposure)
        if cfg.eps > 0:
            x = x + pgd(model, x, y, cfg.eps, cfg.attack_steps, step_factor=cfg.step_factor,
                        generator=attack_generator)
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
    return {"loss": float(loss_sum) / seen, "acc": int(correct) / seen, "seen": seen,
            "time": time.perf_counter() - t0}


def make_optimizer(params: Sequence[nn.Parameter], cfg: FitConfig, total_steps: int):
    """SGD (momentum, weight decay) and a scheduler decaying the lr linearly to 0 over ``total_steps``."""
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: max(0.0, 1.0 - t / total_steps))
    return optimizer, scheduler


def _new_history() -> dict[str, Any]:
    return {k: [] for k in ("epoch", "loss", "acc", "lr", "time", "img_per_s")}


def load_state(path: str, meta: dict, model: nn.Module, optimizer, scheduler) -> tuple[dict, int]:
    """Restore model, optimizer, scheduler and RNG from ``last.pt``; ``(history, epoch)``.
    Raises :class:`RunError` if it was written with other settings (``meta``)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise RunError(f"{path}: not a readable training state ({type(exc).__name__}: {exc}); "
                       "delete it or train without resume to start over") from exc
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise RunError(f"{path}: not a training state file")
    if state["meta"] != meta:
        diff = {k: (state["meta"].get(k), v) for k, v in meta.items() if state["meta"].get(k) != v}
        raise RunError(f"{path} was written with other settings {diff} (saved, now); "
                       "delete it or train without resume to start over")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    return state["history"], int(state["epoch"])


def save_state(path: str, epoch: int, meta: dict, model: nn.Module, optimizer, scheduler,
               history: dict) -> None:
    """Write ``last.pt`` atomically: model, optimizer, scheduler, RNG states, epoch, history."""
    torch_save({"format": STATE_FORMAT, "epoch": epoch, "meta": meta, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": _rng_state(), "history": {k: v for k, v in history.items() if k != "resumed_from"}},
               path)


def _record(history: dict, epoch: int, stats: dict, lr: float, desc: str, epochs: int, log: Log) -> None:
    """Append one epoch to ``history`` and log it; a non-finite loss stops the run."""
    if not math.isfinite(stats["loss"]):
        raise RunError(f"{desc}: training diverged (loss {stats['loss']}) in epoch {epoch + 1}")
    ips = stats["seen"] / stats["time"]
    for key, value in (("epoch", epoch + 1), ("loss", stats["loss"]), ("acc", stats["acc"]),
                       ("lr", lr), ("time", stats["time"]), ("img_per_s", ips)):
        history[key].append(value)
    log(f"{desc} epoch {epoch + 1}/{epochs}: loss {stats['loss']:.4f} acc {stats['acc']:.3f} "
        f"lr {lr:.4g} {stats['time']:.1f}s {ips:.0f} img/s")


def fit(model: nn.Module, train_set: CropSet, config: FitConfig | None = None, *,
        run_dir: str | os.PathLike | None = None, resume: bool = True, desc: str = "train",
        device: str | torch.device = "cpu", log: Log = print, on_step: StepHook | None = None,
        on_epoch: EpochHook | None = None, **settings: Any) -> dict:
    """Train ``model`` in place on ``train_set`` with ``config`` (:class:`FitConfig`; keyword
    ``settings`` such as ``epochs=3, lr=0.05`` replace its values); return the history.

    SGD from ``lr`` decaying linearly to 0 over all steps, cross-entropy, ``samples_per_epoch``
    draws per epoch (0: the size of ``train_set``), class-balanced when ``balanced``, L2-PGD
    adversarial batches when ``eps > 0``, the first ``fixed_layers`` blocks fixed. Randomness comes
    from per-epoch generators derived from ``seed`` (initialise the model yourself).

    With ``run_dir``, ``run_dir/last.pt`` is written after every epoch, and with ``resume`` a run
    continues from it (a kill loses at most the epoch in progress; the result equals an
    uninterrupted run). ``on_step(epoch, step, loss)`` / ``on_epoch(epoch, history)`` are called
    after each step / checkpoint (epochs from 0).

    Returns ``{"epoch", "loss", "acc", "lr", "time", "img_per_s"}`` (lists, one entry per epoch)
    plus ``resumed_from``.
    """
    cfg = (config or FitConfig()).replace(**settings) if settings else (config or FitConfig())
    device = torch.device(device)
    model.to(device)
    fixed = freeze_layers(model, int(cfg.fixed_layers), cfg.layer_reading)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameter left (fixed_layers too large?)")
    if len(train_set) < 2:
        raise ValueError(f"need at least 2 training images, got {len(train_set)}")
    n_samples = int(cfg.samples_per_epoch) or len(train_set)
    steps_per_epoch = len(epoch_batches(train_set.labels, n_samples, cfg.batch_size, cfg.balanced,
                                        _generator(cfg.seed, 0, 0)))
    optimizer, scheduler = make_optimizer(params, cfg, steps_per_epoch * int(cfg.epochs))
    meta = cfg.meta(len(train_set), n_samples)
    history, start = _new_history(), 0
    state_path = os.path.join(os.fspath(run_dir), RunDir.STATE) if run_dir else None
    if state_path and resume and os.path.isfile(state_path):
        history, start = load_state(state_path, meta, model, optimizer, scheduler)
        if start < cfg.epochs:
            log(f"{desc}: resuming after epoch {start}/{cfg.epochs} from {state_path}")
    history["resumed_from"] = start
    for epoch in range(start, int(cfg.epochs)):
        g = _generator(cfg.seed, epoch, 0)
        g_attack = g if device.type == "cpu" else _generator(cfg.seed, epoch, 1, device)
        batches = epoch_batches(train_set.labels, n_samples, cfg.batch_size, cfg.balanced, g)
        lr_epoch = optimizer.param_groups[0]["lr"]
        stats = train_one_epoch(model, train_set, batches, optimizer, scheduler, cfg, generator=g,
                                attack_generator=g_attack, device=device, fixed=fixed, epoch=epoch,
                                desc=desc, on_step=on_step)
        _record(history, epoch, stats, lr_epoch, desc, cfg.epochs, log)
        if state_path:
            save_state(state_path, epoch + 1, meta, model, optimizer, scheduler, history)
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


def run_dir(root_or_dir: str | os.PathLike, cfg: RunConfig, *, is_dir: bool = False) -> RunDir:
    """The :class:`RunDir` of ``cfg`` (under ``root``, or at ``root_or_dir`` with ``is_dir``)."""
    path = os.fspath(root_or_dir) if is_dir else run_dir_for(root_or_dir, cfg)
    return RunDir(path, cfg.identity(), outputs=(os.path.join(path, "model.pt"),))


def load_result(path: str, cfg: RunConfig | None = None, with_source: bool = True) -> dict | None:
    """``path/result.json`` if present (and made by a config equal to ``cfg``), else None.

    ``with_source=False`` accepts a finished run of ``cfg`` from any source model (``report``: a
    run made with ``train --source FILE`` is listed, its source recorded in its config)."""
    if cfg is not None and with_source:
        return run_dir(path, cfg, is_dir=True).result()
    res = read_json(os.path.join(path, RunDir.RESULT))
    if not isinstance(res, dict):
        return None
    if cfg is not None:
        saved = {k: v for k, v in (res.get("identity") or {}).items() if k != "source"}
        if canon(saved) != cfg.identity(with_source=False) or not os.path.isfile(os.path.join(path, "model.pt")):
            return None
    return res


def run_status(root: str, cfg: RunConfig) -> str:
    """``done``, ``partial`` (a last.pt to resume), ``other`` (another config) or ``todo``."""
    return run_dir(root, cfg).status()


def resolve_source(cfg: RunConfig, source_dir: str | os.PathLike | None = None,
                   explicit: SourceSpec | None = None, trust_pickle: bool = False) -> SourceSpec | None:
    """The source model of a transfer run (None when training from scratch), name and SHA-256 filled.

    ``explicit`` (``train --source``) wins; otherwise the preset's ``sources`` names it
    (:func:`training.assets.source_name`: ``imagenet`` / ``robust-l2-eps{E}`` or ``inhouse-eps{E}``)
    and :func:`training.assets.source_spec` finds, verifies and identifies it in ``source_dir``.
    Raises :class:`MissingSource` (the file, where to get it, the fetch or pretrain command).
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
        name = assets.source_name(cfg.settings.sources, cfg.eps_source, cfg.arch)
        spec = assets.source_spec(name, source_dir, cfg.arch, trust_pickle)
    except assets.MissingAsset as exc:
        raise MissingSource(f"{cfg.strategy} on {cfg.split}: {exc}", cfg, os.fspath(source_dir), name) from exc
    except assets.AssetError as exc:
        raise RunError(f"{cfg.strategy} on {cfg.split}: {exc}") from exc
    return dataclasses.replace(spec, eps_source=float(cfg.eps_source))


def attach_sources(cfgs: Sequence[RunConfig], source_dir: str | os.PathLike | None = None,
                   explicit: SourceSpec | None = None, trust_pickle: bool = False) -> list[MissingSource]:
    """Resolve the source of every transfer run and record it in ``cfg.source`` (part of the run's
    identity); return the missing ones (the others' errors, e.g. a wrong hash, are raised)."""
    missing = []
    for c in cfgs:
        try:
            spec = resolve_source(c, source_dir, explicit, trust_pickle)
        except MissingSource as exc:
            missing.append(exc)
            continue
        c.source = spec.to_dict() if spec is not None else None
    return missing


def missing_sources_message(missing: Sequence[MissingSource], source_dir: str | None) -> str:
    """One message for every missing source file: the file, for which runs, where to get it, and
    the command that makes (``pretrain``) or downloads (``fetch``) them all."""
    runs: dict[tuple[str, str, float], list[str]] = {}
    for exc in missing:
        runs.setdefault((exc.name, exc.cfg.arch, exc.eps_source), []).append(f"{exc.cfg.split} {exc.cfg.strategy}")
    inhouse = sorted(k for k in runs if k[0].startswith("inhouse-"))
    named = [k for k in runs if not k[0].startswith("inhouse-")]
    lines = [f"source_{a}_eps{e:g}.pt (for {', '.join(dict.fromkeys(runs[(n, a, e)]))})" for n, a, e in inhouse]
    lines += [f"{assets.get(n).filename} ({n}, for {', '.join(dict.fromkeys(runs[(n, a, e)]))}): "
              f"{assets.get(n).url()}" for n, a, e in named]
    msg = f"missing source models in {source_dir}:\n  " + "\n  ".join(lines)
    if inhouse:
        eps = " ".join(f"{e:g}" for e in sorted({e for _, _, e in inhouse}))
        msg += (f"\nmake them with `python -m training pretrain --preset {missing[0].cfg.preset} --eps {eps} "
                f"--out {source_dir}`")
    if named:
        msg += f"\nfetch them with `python -m training fetch {' '.join(dict.fromkeys(n for n, _, _ in named))} " \
               f"--dir {source_dir}`"
    return msg + " (or give --source-dir DIR / --source NAME|PATH --eps-source EPS)"


def build_run_model(cfg: RunConfig, source: SourceSpec | None) -> core.FillingClassifier:
    """The starting model of a run: random (ST, AT) or the source model with a fresh 4-class head."""
    torch.manual_seed(int(cfg.settings.seed))
    if STRATEGIES[cfg.strategy].transfer:
        if source is None:
            raise RunError(f"{cfg.strategy} needs a source model")
        model = load_source_model(source)
        core.replace_head(model, len(core.CLASSES))
        return model
    return core.build_model(cfg.arch, len(core.CLASSES))


def eval_options(s: Any) -> dict[str, Any]:
    """:func:`evaluate` options from settings with ``eval_batch_size``, ``eval_steps``,
    ``step_factor``, ``eval_max`` and ``seed`` (a Preset, a PretrainPreset)."""
    return dict(batch_size=s.eval_batch_size, steps=s.eval_steps, step_factor=s.step_factor,
                max_attack=s.eval_max, seed=s.seed)


def run_one(cfg: RunConfig, train_set: CropSet, test_set: CropSet, run_dir: str, *,
            source: SourceSpec | None = None, resume: bool = True, device: str = "cpu",
            log: Log = print, **fit_kwargs) -> dict:
    """Train, evaluate and save one run in ``run_dir``; return its result (also ``result.json``).

    The policy of :class:`RunDir`: a finished run (``result.json`` of the same config) is not
    redone when ``resume``; an interrupted one continues from ``last.pt``; a directory holding
    another config is an error unless ``resume=False``, which starts over. Writes ``config.json``,
    ``last.pt`` (per epoch), ``model.pt`` (the final model in the node's checkpoint format),
    ``result.json`` (last) and ``train.log``. ``fit_kwargs`` go to :func:`fit` (hooks).
    """
    if source is not None:
        cfg.source = source.to_dict()
    run = RunDir(run_dir, cfg.identity(), outputs=(os.path.join(run_dir, "model.pt"),))
    done = run.begin(cfg.to_dict(), resume)
    if done is not None:
        log(f"{cfg.split} {cfg.name}: finished before (acc {done['metrics']['acc']:.4f}), skipped")
        return done
    with run.guard():
        log = run.tee(log)
        model = build_run_model(cfg, source)
        t0 = time.time()
        history = fit(model, train_set, cfg.fit_config(), run_dir=run.path, resume=resume,
                      desc=f"{cfg.split} {cfg.name}", device=device, log=log, **fit_kwargs)
        t_train = time.time() - t0
        metrics = evaluate(model, test_set, eps=cfg.eval_eps, device=device, **eval_options(cfg.settings))
        t_eval = time.time() - t0 - t_train
        header = core.CheckpointHeader(arch=cfg.arch, input_size=cfg.size,
                                       mean=tuple(model.normalize.mean.flatten().tolist()),
                                       std=tuple(model.normalize.std.flatten().tolist()),
                                       model_id=model_id(cfg), training=cfg.training_header())
        core.save_checkpoint(os.path.join(run.path, "model.pt"), model.state_dict(), header)
        robust = metrics["robust_acc"]
        log(f"{cfg.split} {cfg.name}: test acc {metrics['acc']:.4f}"
            + (f", robust acc {robust:.4f} (eps {cfg.eval_eps:g})" if robust is not None else "")
            + f" [{t_train:.0f}s train, {t_eval:.0f}s eval]")
    return run.finish({"config": cfg.to_dict(), "metrics": metrics, "history": history,
                       "n_train": len(train_set), "n_test": len(test_set), "train_s": t_train,
                       "eval_s": t_eval, "device": str(device),
                       "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})


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


def check_data(preset: Preset) -> None:
    """:class:`DataError` unless ``preset.data`` names data: the paper preset has none by default,
    so it never trains on the procedural crops without being told (``paper-synthetic``)."""
    if not str(preset.data).strip():
        raise DataError("this preset trains on the real C-CCM: give --data MANIFEST (get it with "
                        "`python -m training fetch c-ccm --dir assets`, then `python -m training import-ccm "
                        "assets/c-ccm --out data/c-ccm/manifest.csv`), or use --preset paper-synthetic "
                        "(or --data synthetic) for the procedural crops")


def load_split(preset: Preset, split: str, cache_dir: str | None = None) -> tuple[CropSet, CropSet]:
    """Train and test CropSets of ``split`` for ``preset`` (``max_train`` / ``max_test`` applied).

    ``preset.data == "synthetic"``: procedural crops (``training.data.make_cropset``), else a crop
    manifest (``training.data.load_manifest``: every image is checked first, a bad manifest is one
    :class:`DataError` listing the problems). The full set is cached in memory per process.
    """
    from training import data as tdata  # imported lazily: the data package is optional for tests

    check_data(preset)
    key = (preset.data, preset.size, preset.n_samples, preset.data_seed)
    if key not in _DATA_CACHE:
        if preset.data == "synthetic":
            _DATA_CACHE[key] = tdata.make_cropset(preset.n_samples, preset.size, seed=preset.data_seed,
                                                  cache_dir=cache_dir)
        else:
            try:
                _DATA_CACHE[key] = tdata.load_manifest(preset.data, preset.size)
            except (tdata.ManifestError, tdata.MissingImagesError, FileNotFoundError) as exc:
                raise DataError(str(exc)) from exc
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
             cache_dir: str | None = None, log: Log = print, trust_pickle: bool = False,
             data: Callable[[Preset, str], tuple[CropSet, CropSet]] | None = None) -> list[dict]:
    """Run ``cfgs`` in order under ``root`` (finished ones are skipped).

    All source models are looked up (and hashed) first, so a missing one stops the study before
    any training (one :class:`MissingSource` listing them all). ``source``: one explicit source
    for every run (``train --source``); ``trust_pickle``: allow pickled source files.
    ``data(preset, split)`` gives (train, test); default :func:`load_split`.
    """
    if data is None:
        for c in cfgs:
            check_data(c.settings)
    missing = attach_sources(cfgs, source_dir, source, trust_pickle)
    if missing:
        raise MissingSource(missing_sources_message(missing, source_dir), missing[0].cfg,
                            os.fspath(source_dir or ""), missing[0].name)
    results = []
    t_start = time.time()
    for i, c in enumerate(cfgs):
        train_set, test_set = (data or (lambda p, sp: load_split(p, sp, cache_dir)))(c.settings, c.split)
        log(f"[{i + 1}/{len(cfgs)}] {c.split} {c.name} ({c.group}): {len(train_set)} train / "
            f"{len(test_set)} test images, {time.time() - t_start:.0f}s elapsed")
        results.append(run_one(c, train_set, test_set, run_dir_for(root, c),
                               source=_spec(c.source), resume=resume, device=device, log=log))
    return results
