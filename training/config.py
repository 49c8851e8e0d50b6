"""The six training strategies of Modas et al. (ICIP 2021) and the presets ``tiny`` / ``cpu`` / ``paper``.

A :class:`Preset` holds every knob of a study (data, recipe, attack, evaluation, sweeps); a
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
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from fillcls_ros.core import ARCHITECTURES

SPLIT_NAMES: tuple[str, ...] = ("S1", "S2", "S3")
#: Preset fields that say which runs a study makes but change no single run's result.
NON_RUN_FIELDS: frozenset[str] = frozenset(
    {"sweep_layers", "sweep_layers_splits", "sweep_eps", "sweep_eps_splits"})


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


def _f(default: Any, help: str, **kw) -> Any:
    """A dataclass field with its CLI help text."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class Preset:
    """Every value of a study; the defaults are the paper's recipe (see :data:`PRESETS`)."""

    # model
    arch: str = _f("resnet18", f"architecture ({', '.join(ARCHITECTURES)})")
    # data
    data: str = _f("synthetic", "'synthetic' (procedural C-CCM-like crops, training.data.make_cropset) "
                                "or the path of a crop manifest CSV (training.data.load_manifest)")
    size: int = _f(224, "input size in pixels (square crops)")
    n_samples: int = _f(10216, "number of synthetic crops to generate (all containers; ignored "
                               "for a manifest)")
    data_seed: int = _f(0, "seed of the synthetic data and of the subsets")
    max_train: int = _f(0, "use at most this many training crops (random subset; 0 = all)")
    max_test: int = _f(0, "evaluate on at most this many test crops (random subset; 0 = all)")
    # recipe
    epochs: int = _f(30, "training epochs (the last-epoch model is evaluated)")
    batch_size: int = _f(64, "batch size")
    samples_per_epoch: int = _f(0, "class-balanced samples drawn per epoch (0 = size of the train set)")
    lr_scratch: float = _f(0.1, "initial learning rate when training from scratch (ST, AT)")
    lr_transfer: float = _f(0.005, "initial learning rate when fine-tuning a source model")
    momentum: float = _f(0.9, "SGD momentum")
    weight_decay: float = _f(5e-4, "SGD weight decay")
    balanced: bool = _f(True, "sample batches with probability inversely proportional to class frequency")
    hflip: bool = _f(True, "random horizontal flip of training crops")
    fixed_layers: int = _f(1, "L: layers fixed when fine-tuning (0..4; 1 = stem + layer1)")
    # adversarial training
    attack_steps: int = _f(10, "PGD steps when training adversarially")
    step_factor: float = _f(2.5, "PGD step size = step_factor * eps / steps")
    eps_source: dict = _f({"S1": 0.05, "S2": 1.0, "S3": 0.5},
                          "eps of the robust source model per split (AT->FT, AT->AFT), e.g. "
                          "S1=0.05,S2=1,S3=0.5 (one number: every split)")
    eps_target: dict = _f({"S1": 0.05, "S2": 1.0, "S3": 0.5},
                          "eps of adversarial training on the target per split (AT, AT->AFT)")
    eps_st_aft: float = _f(0.05, "eps of adversarial fine-tuning for ST->AFT (all splits)")
    # evaluation
    eval_eps: dict = _f({"S1": 0.05, "S2": 1.0, "S3": 0.5},
                        "eps of the test-time PGD attack per split (robust accuracy column; 0 = skip)")
    eval_steps: int = _f(10, "PGD steps of the test-time attack")
    eval_max: int = _f(0, "attack at most this many test crops (random subset; 0 = all)")
    eval_batch_size: int = _f(128, "batch size for evaluation")
    # sweeps (Fig. 5)
    sweep_layers: tuple = _f((0, 1, 2, 3, 4), "values of L for the ST->FT sweep")
    sweep_layers_splits: tuple = _f(("S1", "S2", "S3"), "splits of the ST->FT sweep over L")
    sweep_eps: tuple = _f((0.01, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 3.0, 5.0),
                          "values of eps_source for the AT->FT sweep (L = fixed_layers)")
    sweep_eps_splits: tuple = _f(("S1", "S2", "S3"), "splits of the AT->FT sweep over eps_source")
    seed: int = _f(0, "seed of model initialisation, batch sampling, augmentation and attacks")

    def replace(self, **changes: Any) -> "Preset":
        """A copy with ``changes`` applied (values converted to the field's type)."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        clean = {}
        for key, value in changes.items():
            if key not in fields:
                raise ValueError(f"unknown preset field {key!r}")
            clean[key] = coerce(getattr(self, key), value)
        out = dataclasses.replace(self, **clean)
        out.validate()
        return out

    def validate(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.arch!r}")
        if not 0 <= self.fixed_layers <= 4:
            raise ValueError(f"fixed_layers must be in 0..4, got {self.fixed_layers}")
        if self.epochs < 1 or self.batch_size < 2 or self.size < 8:
            raise ValueError("need epochs >= 1, batch_size >= 2, size >= 8")
        if self.attack_steps < 1 or self.eval_steps < 1 or self.step_factor <= 0:
            raise ValueError("need attack_steps >= 1, eval_steps >= 1, step_factor > 0")
        for name in ("eps_source", "eps_target", "eval_eps"):
            if any(v < 0 for v in getattr(self, name).values()):
                raise ValueError(f"{name} values must be >= 0: {getattr(self, name)}")
        if any(not 0 <= v <= 4 for v in self.sweep_layers):
            raise ValueError(f"sweep_layers must be in 0..4: {self.sweep_layers}")
        for name in ("sweep_layers_splits", "sweep_eps_splits"):
            bad = [s for s in getattr(self, name) if s not in SPLIT_NAMES]
            if bad:
                raise ValueError(f"{name}: unknown splits {bad}; choose from {', '.join(SPLIT_NAMES)}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def coerce(default: Any, value: Any) -> Any:
    """``value`` (possibly a command-line string) converted to the type of ``default``.

    Dicts parse from ``"S1=0.05,S2=1"`` (or one number for every key: ``"0.5"``), tuples from
    ``"0,1,2"``, bools from ``true/false/1/0``.
    """
    if not isinstance(value, str):
        if isinstance(default, tuple):
            return tuple(value)
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value
    text = value.strip()
    if isinstance(default, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"not a boolean: {value!r}")
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        return float(text)
    if isinstance(default, dict):
        if "=" not in text:  # one number for every split: "0.5" -> {"S1": 0.5, "S2": 0.5, "S3": 0.5}
            return {k: float(text) for k in (default or dict.fromkeys(SPLIT_NAMES))}
        out = {}
        for item in filter(None, (p.strip() for p in text.split(","))):
            k, _, v = item.partition("=")
            if not _:
                raise ValueError(f"expected KEY=VALUE items, got {item!r}")
            out[k.strip()] = float(v)
        return out
    if isinstance(default, tuple):
        items = [p.strip() for p in text.split(",") if p.strip()]
        kind = type(default[0]) if default else float
        return tuple(kind(float(p)) if kind is int else kind(p) for p in items)
    return text


#: ``paper``: the recipe of the paper at 224 px on the whole data (a GPU job).
PAPER = Preset()

#: ``cpu``: the six strategies x three splits + both sweeps on 2 CPU cores in about 50 min:
#: 32 px crops, 2400 synthetic crops, 10 epochs of 1600 class-balanced draws (250 SGD steps of 64),
#: PGD-5 for adversarial training (PGD-10 for the test-time attack, on 160 crops), the L sweep on
#: S1 only and eps_source in {0.05, 0.25, 0.5, 1} (the per-split values of the paper are in it).
CPU = PAPER.replace(
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

PRESETS: dict[str, Preset] = {"tiny": TINY, "cpu": CPU, "paper": PAPER}


def cli_overrides(args: Any, fields_of: type, prefix: str) -> dict[str, Any]:
    """Preset changes given on a command line: ``--set FIELD=VALUE`` items (``args.set``), then
    one option per field stored as ``args.<prefix><field>`` (None = not given)."""
    changes: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects FIELD=VALUE, got {item!r}")
        changes[key.strip().replace("-", "_")] = value
    for f in dataclasses.fields(fields_of):
        value = getattr(args, f"{prefix}{f.name}", None)
        if value is not None:
            changes[f.name] = value
    return changes


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
    settings: dict = field(default_factory=dict)  # the preset's values (data, recipe, ...)

    @property
    def name(self) -> str:
        """Directory name of the run: strategy plus its L / eps values."""
        parts = [self.strategy]
        if self.eps_source is not None:
            parts += [f"L{self.fixed_layers}", f"es{self.eps_source:g}"]
        parts.append(f"et{self.eps_target:g}")
        return "_".join(parts)

    def identity(self) -> dict[str, Any]:
        """The values that decide the result: everything but the group, the source (its arch and
        eps_source are fields of the run; its path is known only once found) and the sweep lists,
        which only say which other runs a study makes."""
        d = self.to_dict()
        d.pop("group")
        d.pop("source")
        d["settings"] = {k: v for k, v in d["settings"].items() if k not in NON_RUN_FIELDS}
        return d

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        json.dumps(d)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def training_header(self) -> dict[str, Any]:
        """What the exported checkpoint's ``header.training`` says about the run."""
        s = self.settings
        return {
            "strategy": STRATEGIES[self.strategy].label,
            "split": self.split,
            "L": self.fixed_layers,
            "eps_source": self.eps_source,
            "eps_target": self.eps_target,
            "preset": self.preset,
            "epochs": s.get("epochs"),
            "lr": self.lr,
            "seed": s.get("seed"),
            "data": {k: s.get(k) for k in ("data", "n_samples", "data_seed", "max_train")},
        }


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
                     eval_eps=float(preset.eval_eps.get(split, 0.0)), settings=preset.to_dict())
