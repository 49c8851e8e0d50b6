"""Tables and figures of a study, from the ``result.json`` files of its runs.

:func:`write_report` writes into ``<root>/report/`` (or ``out_dir``):

* ``results.csv`` / ``results.md``: accuracy per split x strategy x test container (the data of
  the paper's Fig. 6), overall accuracy and accuracy under the test-time attack; per-class recall;
* ``confusion.csv``: the confusion matrix of every main run (long format);
* ``sweeps.csv``: accuracy vs L (ST->FT) and vs eps_source (AT->FT) (the data of Fig. 5);
* ``fig5.png`` (accuracy vs L; accuracy vs eps_source, log x-axis) and ``fig6.png``
  (per-container bars per strategy, one panel per split), drawn with matplotlib's Agg backend.

Runs not finished yet are listed as missing; the report is written with what exists.
"""

from __future__ import annotations

import csv
import os
from typing import Any, Sequence

from fillcls.atomic import atomic_path, atomic_write
from fillcls.core import CLASSES
from training.config import SPLIT_NAMES, STRATEGIES, Preset, RunConfig
from training.engine import _container_key, load_result, plan_study, run_dir_for

SPLIT_MARKERS = {"S1": "s", "S2": "o", "S3": "^"}
STRATEGY_COLORS = {name: f"C{i}" for i, name in enumerate(STRATEGIES)}


def container_names() -> dict[str, str]:
    """Readable container names (``C1`` -> ``"red cup"``) if the data package provides them."""
    try:
        from training.data import ccm
    except Exception:  # the data package is optional here
        return {}
    value = getattr(ccm, "CONTAINER_NAMES", None)
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _label(c: str, names: dict[str, str]) -> str:
    return f"{c} {names[c]}" if c in names and names[c] != c else c


def collect(root: str, preset_name: str, preset: Preset,
            splits: Sequence[str] = SPLIT_NAMES) -> dict[str, Any]:
    """Planned runs of the study and their results: ``{"main", "layers", "eps", "missing"}``.

    Each entry of ``main`` / ``layers`` / ``eps`` is ``(RunConfig, result or None)``.
    """
    out: dict[str, Any] = {"missing": []}
    for key, kw in (("main", dict(main=True, sweep_layers=False, sweep_eps=False)),
                    ("layers", dict(main=False, sweep_layers=True, sweep_eps=False)),
                    ("eps", dict(main=False, sweep_layers=False, sweep_eps=True))):
        rows = []
        for cfg in plan_study(preset_name, preset, splits, **kw):
            res = load_result(run_dir_for(root, cfg), cfg, with_source=False)
            rows.append((cfg, res))
            if res is None:
                out["missing"].append(f"{cfg.split}/{cfg.name}")
        out[key] = rows
    out["missing"] = list(dict.fromkeys(out["missing"]))
    return out


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def _write_csv(path: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    def write(f):
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)

    atomic_write(path, write, newline="", encoding="utf-8")


def _results_rows(data: dict, names: dict[str, str]) -> tuple[list, list]:
    """Rows of ``results.csv`` (per container + ``all``) and ``confusion.csv`` of the main runs."""
    rows, conf_rows = [], []
    for cfg, res in data["main"]:
        if res is None:
            continue
        m = res["metrics"]
        common = [cfg.split, cfg.strategy, STRATEGIES[cfg.strategy].label, cfg.fixed_layers,
                  "" if cfg.eps_source is None else cfg.eps_source, cfg.eps_target]
        for c in sorted(m["per_container"], key=_container_key):
            rp = (m.get("robust_per_container") or {}).get(c)
            rows.append(common + [c, names.get(c, c), m["container_n"].get(c, ""),
                                  f"{m['per_container'][c]:.6f}", "" if rp is None else f"{rp:.6f}",
                                  cfg.eval_eps])
        rows.append(common + ["all", "all", m["n"], f"{m['acc']:.6f}",
                              "" if m["robust_acc"] is None else f"{m['robust_acc']:.6f}", cfg.eval_eps])
        for i, true in enumerate(m["classes"]):
            for j, pred in enumerate(m["classes"]):
                conf_rows.append(common[:3] + [true, pred, m["confusion"][i][j]])
    return rows, conf_rows


def _sweep_rows(data: dict) -> list:
    rows = []
    for kind in ("layers", "eps"):
        for cfg, res in data[kind]:
            if res is not None:
                m = res["metrics"]
                rows.append([kind, cfg.split, cfg.strategy, cfg.fixed_layers, cfg.eps_source,
                             f"{m['acc']:.6f}", "" if m["robust_acc"] is None else f"{m['robust_acc']:.6f}",
                             m["n"]])
    return rows


def _split_md(data: dict, split: str, names: dict[str, str]) -> list[str]:
    """The accuracy and per-class recall tables of one split."""
    runs = [(c, r) for c, r in data["main"] if c.split == split]
    conts = sorted({k for _, r in runs if r for k in r["metrics"]["per_container"]}, key=_container_key)
    md = [f"## {split}", "", "| strategy | L | eps_s | eps_t | "
          + " | ".join(_label(c, names) for c in conts) + " | all | robust |",
          "|" + "---|" * (len(conts) + 6)]
    for cfg, res in runs:
        m = res["metrics"] if res else None
        cells = [_pct(m["per_container"].get(c)) if m else "—" for c in conts]
        md.append(f"| {STRATEGIES[cfg.strategy].label} | "
                  f"{cfg.fixed_layers if cfg.eps_source is not None else '—'} | "
                  f"{'—' if cfg.eps_source is None else f'{cfg.eps_source:g}'} | {cfg.eps_target:g} | "
                  + " | ".join(cells) + f" | {_pct(m['acc']) if m else '—'} | "
                  f"{_pct(m['robust_acc']) if m else '—'} |")
    md += ["", "Per-class recall (%):", "", "| strategy | " + " | ".join(CLASSES) + " |",
           "|---|" + "---|" * len(CLASSES)]
    for cfg, res in runs:
        pc = res["metrics"]["per_class"] if res else {}
        md.append(f"| {STRATEGIES[cfg.strategy].label} | " + " | ".join(_pct(pc.get(k)) for k in CLASSES) + " |")
    return md + [""]


def _results_md(data: dict, root: str, preset_name: str, preset: Preset, splits: Sequence[str],
                names: dict[str, str]) -> str:
    md = [f"# Filling level classification: preset `{preset_name}`", "",
          f"Runs under `{root}`. Accuracy (%) on the test containers of each split (paper Fig. 6); "
          "`all`: all test crops; `robust`: accuracy under a test-time L2 PGD attack "
          f"({preset.eval_steps} steps, eps per split {preset.eval_eps}).", ""]
    for split in splits:
        md += _split_md(data, split, names)
    for kind, title, col in (("layers", "ST→FT: accuracy vs fixed layers L", "L"),
                             ("eps", "AT→FT: accuracy vs eps_source", "eps_source")):
        md += [f"## {title} (Fig. 5)", "", f"| split | {col} | acc | robust |", "|---|---|---|---|"]
        for cfg, res in data[kind]:
            val = cfg.fixed_layers if kind == "layers" else f"{cfg.eps_source:g}"
            md.append(f"| {cfg.split} | {val} | {_pct(res['metrics']['acc']) if res else '—'} | "
                      f"{_pct(res['metrics']['robust_acc']) if res else '—'} |")
        md.append("")
    if data["missing"]:
        md += ["## Missing runs", "", *[f"- {m}" for m in data["missing"]], ""]
    return "\n".join(md)


def write_report(root: str, preset_name: str, preset: Preset, splits: Sequence[str] = SPLIT_NAMES,
                 out_dir: str | None = None) -> dict[str, str]:
    """Write the tables and figures of the study under ``root``; return ``{name: path}``."""
    out_dir = out_dir or os.path.join(root, "report")
    data = collect(root, preset_name, preset, splits)
    names = container_names()
    paths = {k: os.path.join(out_dir, f) for k, f in (
        ("results_csv", "results.csv"), ("results_md", "results.md"), ("confusion_csv", "confusion.csv"),
        ("sweeps_csv", "sweeps.csv"), ("fig5", "fig5.png"), ("fig6", "fig6.png"))}
    rows, conf_rows = _results_rows(data, names)
    _write_csv(paths["results_csv"], ["split", "strategy", "label", "L", "eps_source", "eps_target",
                                      "container", "name", "n", "acc", "robust_acc", "eval_eps"], rows)
    _write_csv(paths["confusion_csv"], ["split", "strategy", "label", "true", "pred", "count"], conf_rows)
    _write_csv(paths["sweeps_csv"], ["sweep", "split", "strategy", "L", "eps_source", "acc",
                                     "robust_acc", "n"], _sweep_rows(data))
    md = _results_md(data, root, preset_name, preset, splits, names)
    atomic_write(paths["results_md"], lambda f: f.write(md), encoding="utf-8")
    plot_fig5(data, paths["fig5"])
    plot_fig6(data, splits, names, paths["fig6"])
    return paths


def _save_figure(fig, path: str) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_fig5(data: dict, path: str) -> None:
    """Accuracy vs L (ST->FT) and vs eps_source (AT->FT, log x) per split; the best point in red."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, kind, xlabel in ((axes[0], "layers", "fixed layers L (ST→FT)"),
                             (axes[1], "eps", "ε source (AT→FT)")):
        for split in SPLIT_NAMES:
            pts = sorted((c.fixed_layers if kind == "layers" else c.eps_source, 100 * r["metrics"]["acc"])
                         for c, r in data[kind] if c.split == split and r is not None)
            if not pts:
                continue
            xs, ys = zip(*pts)
            ax.plot(xs, ys, "-", color="black", marker=SPLIT_MARKERS.get(split, "o"), label=split)
            best = max(range(len(ys)), key=ys.__getitem__)
            ax.plot([xs[best]], [ys[best]], SPLIT_MARKERS.get(split, "o"), color="red", zorder=3)
        if kind == "eps":
            from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

            ax.set_xscale("log")
            ticks = sorted({c.eps_source for c, r in data[kind] if r is not None})
            if ticks:
                ax.xaxis.set_major_locator(FixedLocator(ticks))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        else:
            ax.set_xticks(range(5))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)


def plot_fig6(data: dict, splits: Sequence[str], names: dict[str, str], path: str) -> None:
    """Per-container accuracy bars, one bar per strategy, one panel per split."""
    plt = _pyplot()
    splits = list(splits)
    fig, axes = plt.subplots(1, len(splits), figsize=(4.2 * len(splits), 3.8), squeeze=False)
    for ax, split in zip(axes[0], splits):
        runs = [(c, r) for c, r in data["main"] if c.split == split]
        conts = sorted({k for _, r in runs if r for k in r["metrics"]["per_container"]}, key=_container_key)
        width = 0.8 / max(1, len(runs))
        for i, (cfg, res) in enumerate(runs):
            ys = [100 * res["metrics"]["per_container"].get(c, 0.0) if res else 0.0 for c in conts]
            ax.bar([j + (i - (len(runs) - 1) / 2) * width for j in range(len(conts))], ys, width,
                   color=STRATEGY_COLORS[cfg.strategy], label=STRATEGIES[cfg.strategy].label)
        ax.set_xticks(range(len(conts)))
        ax.set_xticklabels([_label(c, names) for c in conts], fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_title(split)
        ax.set_ylabel("accuracy (%)")
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=6, fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    _save_figure(fig, path)
    plt.close(fig)


def result_summary(results: Sequence[dict]) -> str:
    """One line per run result: split, run name, accuracy, robust accuracy."""
    lines = []
    for r in results:
        cfg = RunConfig.from_dict(r["config"])
        m = r["metrics"]
        lines.append(f"{cfg.split:3s} {cfg.name:28s} acc {_pct(m['acc']):>5s}%  "
                     f"robust {_pct(m['robust_acc']):>5s}%  "
                     + " ".join(f"{c}:{_pct(v)}" for c, v in m["per_container"].items()))
    return "\n".join(lines)
