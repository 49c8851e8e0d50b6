"""The six training strategies of Modas et al. (ICIP 2021) and the presets ``tiny`` / ``cpu`` / ``paper``.

Settings are typed (:class:`training.runs.Settings`): :class:`Recipe` holds the SGD values every
training loop shares, :class:`FitConfig` is what the loop receives (recipe + lr, eps, L), and a
:class:`Preset` holds every knob of a study (data, recipe, attack, evaluation, sweeps); a
strategy is a handful of switches (:class:`Strategy`: from scratch or from a source model, clean
or adversarial on the target). :func:`resolve_run` turns (preset, split, strategy, optional
L / eps overrides) into the :class:`RunConfig` of one run, which is written as ``config.json``
in its run directory. Every preset field can be overridden (``Preset.replace`` / the CLI's
``--<field>`` options).

Recipe of the paper (Sec. 3.2): SGD, 30 epochs, cross-entropy, lr 0.1 from scratch and 0.005 for
transfer, linear decay, class-balanced batches, last-epoch model, L2 PGD-10, L = 1 for the
transfer strategies, eps_source per split S1 0.05 / S2 1 / S3 0.5, eps_target = eps_source except
ST->AFT, which uses 0.05. Not given by the paper (our choices): batch size 64, momentum 0.9,
weight decay 5e-4, random horizontal flip, the test-time attack.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

from fillcls.core import ARCHITECTURES, RESNET_BLOCKS
from fillcls.world.containers import SPLITS
from training.runs import Settings, canon, setting

SPLIT_NAMES: tuple[str, ...] = tuple(SPLITS)
#: Preset fields that say which runs a study makes but change no single run's result.
NON_RUN_FIELDS: frozenset[str] = frozenset(
    {"sweep_layers", "sweep_layers_splits", "sweep_eps", "sweep_eps_splits"})
#: Preset fields whose value for one run is part of the run's name (``L``, ``es``, ``et``) and a
#: field of its :class:`RunConfig`: they do not name the preset directory nor enter a run's identity
#: through the preset, so ``train --eps-source 0.5`` lands where the study's eps sweep looks.
RESOLVED_FIELDS: frozenset[str] = frozenset({"eps_source", "eps_target", "eps_st_aft", "fixed_layers"})
#: Readings of L (``layer_reading``): what the first L "layers" of a ResNet are (docs/training.md).
LAYER_READINGS: dict[str, tuple[tuple[str, ...], ...]] = {
    # a layer is a ResNet stage, the stem counts with layer1 (L = 4: only the head trains);
    # fillcls.core.RESNET_BLOCKS, what core.fixed_modules uses; = robust-models-transfer's --freeze-level
    "blocks": RESNET_BLOCKS,
    # He et al. 2016, Table 1: conv1 is a layer of its own (L = 4: layer4 + head train)
    "resnet_table1": (("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",)),
}


@dataclass(frozen=True)
class Strategy:
    """One training strategy: where the weights start and whether the target training is adversarial."""

    name: str  # short ASCII name, used in paths and on the command line
    label: str  # name as printed in the paper
    source: str | None  # None: from scratch; "standard": eps_source = 0; "robust": eps_source > 0
    adversarial: bool  # adversarial training on the target data (eps_target > 0)

    @property
    def transfer(self) -> bool:
        return self.source is not None


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("ST", "ST", None, False),
        Strategy("AT", "AT", None, True),
        Strategy("ST-FT", "ST→FT", "standard", False),
        Strategy("ST-AFT", "ST→AFT", "standard", True),
        Strategy("AT-FT", "AT→FT", "robust", False),
        Strategy("AT-AFT", "AT→AFT", "robust", True),
    )
}


def get_strategy(name: str) -> Strategy:
    """Strategy by name; accepts ``ST-FT``, ``ST->FT``, ``ST→FT``, ``st_ft`` ..."""
    key = name.strip().upper().replace("→", "-").replace("->", "-").replace("_", "-")
    if key not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
    return STRATEGIES[key]


@dataclass(frozen=True)
class Recipe(Settings):
    """The SGD recipe values every training loop of the project shares (trainer and pretraining)."""

    epochs: int = setting(30, "training epochs (the last-epoch model is evaluated)")
    batch_size: int = setting(64, "batch size")
    samples_per_epoch: int = setting(0, "class-balanced samples drawn per epoch (0 = size of the train set)")
    momentum: float = setting(0.9, "SGD momentum")
    weight_decay: float = setting(5e-4, "SGD weight decay")
    balanced: bool = setting(True, "sample batches with probability inversely proportional to class "
                                   "frequency")
    hflip: bool = setting(True, "random horizontal flip of training crops")
    exposure: float = setting(0.0, "exposure augmentation: each training crop's pixels scaled by a factor drawn "
                                   "log-uniformly in [1/(1+e), 1+e], clipped (0 = off)")
    attack_steps: int = setting(10, "PGD steps when training adversarially")
    step_factor: float = setting(2.5, "PGD step size = step_factor * eps / steps")
    seed: int = setting(0, "seed of model initialisation, batch sampling, augmentation and attacks")

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError(f"need epochs >= 1 and batch_size >= 2, got {self.epochs} and {self.batch_size}")
        if self.attack_steps < 1 or self.step_factor <= 0:
            raise ValueError("need attack_steps >= 1 and step_factor > 0")
        if self.samples_per_epoch < 0:
            raise ValueError(f"samples_per_epoch must be >= 0, got {self.samples_per_epoch}")
        if not 0 <= self.exposure <= 3:
            raise ValueError(f"exposure must be in [0, 3], got {self.exposure}")

    def recipe_values(self) -> dict[str, Any]:
        """:meth:`to_dict` without ``exposure`` while it is off, so runs and source models made
        before it existed keep their identity."""
        return self.to_dict_without_defaults(("exposure",))


@dataclass(frozen=True)
class FitConfig(Recipe):
    """Settings of :func:`training.engine.fit`: the shared recipe plus the run's lr, eps and L."""

    WHAT: ClassVar[str] = "fit"

    lr: float = setting(0.1, "initial learning rate (linear decay to 0 over all steps)")
    eps: float = setting(0.0, "L2 radius of adversarial training (0: clean training)")
    fixed_layers: int = setting(0, "L: first blocks fixed (no gradient, BatchNorm frozen)")
    layer_reading: str = setting("blocks", "what L counts: 'blocks' or 'resnet_table1' (LAYER_READINGS)")

    @classmethod
    def of(cls, recipe: Recipe, **values: Any) -> "FitConfig":
        """The recipe fields of ``recipe`` (a Preset, a PretrainPreset ...) plus ``values``."""
        return cls(**{k: getattr(recipe, k) for k in Recipe.field_names()}, **values)

    def validate(self) -> None:
        super().validate()
        if self.eps < 0 or not 0 <= self.fixed_layers <= 4:
            raise ValueError(f"need eps >= 0 and fixed_layers in 0..4, got {self.eps} and {self.fixed_layers}")
        if self.layer_reading not in LAYER_READINGS:
            raise ValueError(f"layer_reading must be one of {', '.join(LAYER_READINGS)}, got {self.layer_reading!r}")

    def meta(self, n_train: int, n_samples: int) -> dict[str, Any]:
        """What ``last.pt`` records to refuse resuming with other settings (``layer_reading`` only
        when not the default, so states written before it existed still resume)."""
        extra = {} if self.layer_reading == "blocks" else {"layer_reading": self.layer_reading}
        if self.exposure:
            extra["exposure"] = float(self.exposure)
        return extra | {"n_train": n_train, "epochs": int(self.epochs), "lr": float(self.lr),
                "batch_size": int(self.batch_size), "samples_per_epoch": n_samples,
                "momentum": float(self.momentum), "weight_decay": float(self.weight_decay),
                "balanced": bool(self.balanced), "hflip": bool(self.hflip), "eps": float(self.eps),
                "attack_steps": int(self.attack_steps), "step_factor": float(self.step_factor),
                "fixed_layers": int(self.fixed_layers), "seed": int(self.seed)}


@dataclass(frozen=True)
class Preset(Recipe):
    """Every value of a study; the defaults are the paper's recipe (see :data:`PRESETS`)."""

    WHAT: ClassVar[str] = "preset"

    # model
    arch: str = setting("resnet18", f"architecture ({', '.join(ARCHITECTURES)})")
    # data
    data: str = setting("", "the path of a crop manifest CSV (training.data.load_manifest; the real "
                            "C-CCM: `python -m training import-ccm`) or 'synthetic' (procedural C-CCM-like "
                            "crops, training.data.make_cropset); empty (preset paper): must be given")
    size: int = setting(224, "input size in pixels (square crops)")
    n_samples: int = setting(10216, "number of synthetic crops to generate (all containers; ignored "
                                    "for a manifest)")
    data_seed: int = setting(0, "seed of the synthetic data and of the subsets")
    max_train: int = setting(0, "use at most this many training crops (random subset; 0 = all)")
    max_test: int = setting(0, "evaluate on at most this many test crops (random subset; 0 = all)")
    # recipe (with the shared ones of Recipe)
    lr_scratch: float = setting(0.1, "initial learning rate when training from scratch (ST, AT)")
    lr_transfer: float = setting(0.005, "initial learning rate when fine-tuning a source model")
    fixed_layers: int = setting(1, "L: layers fixed when fine-tuning (0..4; 1 = stem + layer1 with "
                                   "layer_reading blocks, the stem alone with resnet_table1)")
    layer_reading: str = setting("blocks", "what L counts: 'blocks' (a layer is a ResNet stage, the stem "
                                           "with layer1, as robust-models-transfer's --freeze-level) or "
                                           "'resnet_table1' (conv1 is a layer of its own, He et al.'s Table 1)")
    sources: str = setting("paper", "source models of the transfer runs: 'paper' (imagenet for eps_source "
                                    "0, Salman et al.'s robust-l2-eps<E> otherwise: `python -m training "
                                    "fetch sources`) or 'inhouse' (source_<arch>_eps<E>.pt of `python -m "
                                    "training pretrain`), found in --source-dir")
    # adversarial training
    eps_source: dict = setting({"S1": 0.05, "S2": 1.0, "S3": 0.5},
                               "eps of the robust source model per split (AT->FT, AT->AFT), e.g. "
                               "S1=0.05,S2=1,S3=0.5 (one number: every split)")
    eps_target: dict = setting({"S1": 0.05, "S2": 1.0, "S3": 0.5},
                               "eps of adversarial training on the target per split (AT, AT->AFT)")
    eps_st_aft: float = setting(0.05, "eps of adversarial fine-tuning for ST->AFT (all splits)")
    # evaluation
    eval_eps: dict = setting({"S1": 0.05, "S2": 1.0, "S3": 0.5},
                             "eps of the test-time PGD attack per split (robust accuracy column; 0 = skip)")
    eval_steps: int = setting(10, "PGD steps of the test-time attack")
    eval_max: int = setting(0, "attack at most this many test crops (random subset; 0 = all)")
    eval_batch_size: int = setting(128, "batch size for evaluation")
    # sweeps (Fig. 5)
    sweep_layers: tuple = setting((0, 1, 2, 3, 4), "values of L for the ST->FT sweep")
    sweep_layers_splits: tuple = setting(("S1", "S2", "S3"), "splits of the ST->FT sweep over L")
    sweep_eps: tuple = setting((0.01, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 3.0, 5.0),
                               "values of eps_source for the AT->FT sweep (L = fixed_layers)")
    sweep_eps_splits: tuple = setting(("S1", "S2", "S3"), "splits of the AT->FT sweep over eps_source")

    def validate(self) -> None:
        super().validate()
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.arch!r}")
        if not 0 <= self.fixed_layers <= 4:
            raise ValueError(f"fixed_layers must be in 0..4, got {self.fixed_layers}")
        if self.layer_reading not in LAYER_READINGS:
            raise ValueError(f"layer_reading must be one of {', '.join(LAYER_READINGS)}, got {self.layer_reading!r}")
        if self.sources not in ("paper", "inhouse"):
            raise ValueError(f"sources must be 'paper' or 'inhouse', got {self.sources!r}")
        if self.size < 8 or self.eval_steps < 1:
            raise ValueError("need size >= 8 and eval_steps >= 1")
        for name in ("eps_source", "eps_target", "eval_eps"):
            if any(v < 0 for v in getattr(self, name).values()):
                raise ValueError(f"{name} values must be >= 0: {getattr(self, name)}")
        if any(not 0 <= v <= 4 for v in self.sweep_layers):
            raise ValueError(f"sweep_layers must be in 0..4: {self.sweep_layers}")
        for name in ("sweep_layers_splits", "sweep_eps_splits"):
            bad = [s for s in getattr(self, name) if s not in SPLIT_NAMES]
            if bad:
                raise ValueError(f"{name}: unknown splits {bad}; choose from {', '.join(SPLIT_NAMES)}")

    def run_values(self) -> dict[str, Any]:
        """:meth:`recipe_values` without the sweep lists (they change no single run's result) and
        without :data:`RESOLVED_FIELDS` (a run's own L / eps values are fields of its RunConfig)."""
        return {k: v for k, v in self.recipe_values().items() if k not in NON_RUN_FIELDS | RESOLVED_FIELDS}


#: ``paper``: the recipe of the paper at 224 px on the real C-CCM (``--data MANIFEST``) from the
#: ImageNet and robust ImageNet ResNet-18s (``sources="paper"``): a GPU job.
PAPER = Preset()

#: ``paper-synthetic``: the paper's recipe and source models on the procedural data (no C-CCM).
PAPER_SYNTHETIC = PAPER.replace(data="synthetic")

#: ``cpu``: the six strategies x three splits + both sweeps on 2 CPU cores in about 50 min:
#: 32 px crops, 2400 synthetic crops, 10 epochs of 1600 class-balanced draws (250 SGD steps of 64),
#: PGD-5 for adversarial training (PGD-10 for the test-time attack, on 160 crops), the L sweep on
#: S1 only and eps_source in {0.05, 0.25, 0.5, 1} (the per-split values of the paper are in it).
CPU = PAPER.replace(
    data="synthetic",
    sources="inhouse",
    size=32,
    n_samples=2400,
    epochs=10,
    samples_per_epoch=1600,
    attack_steps=5,
    eval_max=160,
    eval_batch_size=200,
    sweep_layers_splits=("S1",),
    sweep_eps=(0.05, 0.25, 0.5, 1.0),
)

#: ``tiny``: seconds, for the tests.
TINY = PAPER.replace(
    data="synthetic",
    sources="inhouse",
    size=16,
    n_samples=64,
    epochs=2,
    batch_size=8,
    attack_steps=2,
    eval_steps=2,
    eval_batch_size=32,
    sweep_layers=(0, 4),
    sweep_eps=(0.05, 0.5),
)

PRESETS: dict[str, Preset] = {"tiny": TINY, "cpu": CPU, "paper": PAPER, "paper-synthetic": PAPER_SYNTHETIC}


def get_preset(name: str, **overrides: Any) -> Preset:
    """Preset by name with ``overrides`` applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]


def preset_diff(name: str, reference: str = "paper") -> dict[str, tuple[Any, Any]]:
    """Fields where preset ``name`` differs from ``reference``: ``{field: (reference, name)}``."""
    a, b = get_preset(reference).to_dict(), get_preset(name).to_dict()
    return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


@dataclass
class RunConfig:
    """Everything that defines one training run (written as ``config.json``)."""

    preset: str
    split: str
    strategy: str
    group: str  # "main", "sweep-layers" or "sweep-eps"
    arch: str
    size: int
    fixed_layers: int
    eps_source: float | None  # None: trained from scratch
    eps_target: float
    lr: float
    eval_eps: float
    source: dict | None = None  # SourceSpec.to_dict() of the source model (transfer strategies)
    settings: Preset = dataclasses.field(default_factory=Preset)  # the preset's values (data, recipe, ...)

    @property
    def name(self) -> str:
        """Directory name of the run: strategy plus its L / eps values."""
        parts = [self.strategy]
        if self.eps_source is not None:
            parts += [f"L{self.fixed_layers}", f"es{self.eps_source:g}"]
        parts.append(f"et{self.eps_target:g}")
        return "_".join(parts)

    def identity(self, with_source: bool = True) -> dict[str, Any]:
        """The values that decide the result: everything but the group and the sweep lists (which
        only say which other runs a study makes); of the source model its name, SHA-256 and format
        (:meth:`training.sources.SourceSpec.identity`; not its path), so a run from another source
        file is another run. ``with_source=False``: without the source (what ``report`` compares)."""
        d = self.to_dict()
        d.pop("group")
        src = d.pop("source")
        if with_source and src:
            d["source"] = {"name": src.get("name") or os.path.basename(str(src.get("path", ""))),
                           "sha256": src.get("sha256", ""), "format": src.get("fmt", "")}
        d["settings"] = self.settings.run_values()
        return canon(d)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["settings"] = self.settings.to_dict()
        return canon(d)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["settings"] = Preset.from_dict(kw.get("settings") or {})
        return cls(**kw)

    def training_header(self) -> dict[str, Any]:
        """What the exported checkpoint's ``header.training`` says about the run."""
        s = self.settings
        return {
            "strategy": STRATEGIES[self.strategy].label,
            "split": self.split,
            "L": self.fixed_layers,
            "layer_reading": s.layer_reading,
            "source": ({k: self.source.get(k) for k in ("name", "sha256", "fmt")} if self.source else None),
            "eps_source": self.eps_source,
            "eps_target": self.eps_target,
            "preset": self.preset,
            "epochs": s.epochs,
            "lr": self.lr,
            "seed": s.seed,
            "data": {"data": s.data, "n_samples": s.n_samples, "data_seed": s.data_seed,
                     "max_train": s.max_train},
        }

    def fit_config(self) -> FitConfig:
        """The training loop's settings of this run."""
        return FitConfig.of(self.settings, lr=self.lr, eps=self.eps_target, fixed_layers=self.fixed_layers,
                            layer_reading=self.settings.layer_reading)


def resolve_run(preset_name: str, preset: Preset, split: str, strategy: str | Strategy,
                fixed_layers: int | None = None, eps_source: float | None = None,
                eps_target: float | None = None, group: str = "main") -> RunConfig:
    """The configuration of one run of ``strategy`` on ``split`` under ``preset``.

    ``fixed_layers`` / ``eps_source`` / ``eps_target`` override the preset's choice for this run
    (sweeps). From-scratch strategies ignore ``fixed_layers`` and ``eps_source``; ST->* always use
    the standard source (eps_source = 0); clean strategies always use eps_target = 0.
    """
    if split not in SPLIT_NAMES:
        raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLIT_NAMES)}")
    st = strategy if isinstance(strategy, Strategy) else get_strategy(strategy)

    def per_split(table: Mapping[str, float], what: str) -> float:
        if split not in table:
            raise ValueError(f"{what} has no value for split {split} ({table})")
        return float(table[split])

    if st.source is None:
        es, L, lr = None, 0, preset.lr_scratch
    elif st.source == "standard":
        es, L, lr = 0.0, preset.fixed_layers, preset.lr_transfer
    else:
        es, L, lr = per_split(preset.eps_source, "eps_source"), preset.fixed_layers, preset.lr_transfer
        if eps_source is not None:
            es = float(eps_source)
        if es <= 0:
            raise ValueError(f"{st.label} needs a robust source model (eps_source > 0), got {es}")
    if fixed_layers is not None and st.transfer:
        L = int(fixed_layers)
    if not st.adversarial:
        et = 0.0
    elif eps_target is not None:
        et = float(eps_target)
    elif st.name == "ST-AFT":
        et = float(preset.eps_st_aft)
    else:
        et = per_split(preset.eps_target, "eps_target")
    return RunConfig(preset=preset_name, split=split, strategy=st.name, group=group, arch=preset.arch,
                     size=preset.size, fixed_layers=L, eps_source=es, eps_target=et, lr=lr,
                     eval_eps=float(preset.eval_eps.get(split, 0.0)), settings=preset)
