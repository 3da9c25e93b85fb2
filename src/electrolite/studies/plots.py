"""The PNG figures of ``electrolite report``, drawn on matplotlib's Agg canvas.

Figures are built with the object API (``Figure`` + ``FigureCanvasAgg``), never ``pyplot``: no
display is needed and no global backend state changes. matplotlib is the ``report`` extra and is
imported only here, when a report is drawn.

- ``curves``: one pre-training run against paper FLOPs (training loss, validation accuracies).
- ``compare_curves``: validation MLM accuracy (and RTD AUC) of several runs on one axis.
- ``score_vs_flops``: average downstream score against pre-training FLOPs (the ELECTRA paper's
  Figure 1 view); ``scores_per_task``: the same per task, median with min–max error bars.

Each writes its PNG and returns the ``Figure``, whose axes hold the numbers drawn (for tests). ``Run`` and
``StudyReport`` are what the figures draw; ``report.py`` reads them from run and study dirs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from electrolite.errors import UserError


@dataclass
class Run:
    """A pre-training run: its metrics.jsonl lines (file order) split into training and validation."""

    name: str  # unique in one report: the plot is curves-<name>.png
    path: Path
    train: list[dict[str, float]]  # lines with "loss"
    valid: list[dict[str, float]]  # lines with "valid_loss"
    objective: str = ""  # from config.yaml when it is there
    size: str = ""


@dataclass
class StudyReport:
    """A study dir: its checked results.json and the runs of its pretrained setups."""

    name: str
    path: Path
    data: dict[str, Any]  # results.json, checked; every setup has "label", every score is None or median/min/max
    runs: dict[str, Run] = field(default_factory=dict)  # setup name → run
    missing: list[str] = field(default_factory=list)  # setup runs named in results.json that are not there (yet)


DPI = 110
FLOPS_LABEL = "pre-training FLOPs (ELECTRA paper convention)"
# Validation panels of a run's curves, each drawn when any validation line has the key.
VALID_PANELS = (("valid_mlm_accuracy", "validation generator / MLM accuracy"),
                ("valid_rtd_auc", "validation RTD AUC"),
                ("valid_sop_accuracy", "validation SOP accuracy"))


def require_matplotlib() -> str:
    """matplotlib's version, or a one-line UserError saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise UserError("reports need matplotlib: install the report extra (pip install 'electrolite[report]')") from None
    return matplotlib.__version__


def _figure(width: float, height: float, rows: int = 1, cols: int = 1) -> tuple[Any, list[Any]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    return fig, axes


def smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over `window` points that skips non-finite values.

    A step whose loss was NaN (skipped, see ``train.max_nonfinite_steps``) leaves no hole in the
    curve; a window holding no finite value gives NaN.

    Args:
        y: (N,) values in logging order.
        window: points per average, ≥ 1.

    Returns:
        (N,) averages; element i averages the finite values of ``y[max(0, i - window + 1) : i + 1]``.
    """
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(y)
    sums = np.concatenate([[0.0], np.cumsum(np.where(ok, y, 0.0))])
    counts = np.concatenate([[0], np.cumsum(ok)])
    hi = np.arange(1, len(y) + 1)
    lo = np.maximum(0, hi - window)
    n = counts[hi] - counts[lo]
    return np.where(n > 0, (sums[hi] - sums[lo]) / np.maximum(n, 1), np.nan)


def _series(lines: list[dict[str, float]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(paper FLOPs, values) of the lines that have `key`."""
    rows = [(m["paper_flops"], m[key]) for m in lines if key in m]
    return np.array([r[0] for r in rows], dtype=float), np.array([r[1] for r in rows], dtype=float)


def _step_axis(ax: Any, run: Run) -> None:
    """Steps on a secondary top axis: paper FLOPs are per-step FLOPs × step, so the map is linear."""
    last = max(run.train + run.valid, key=lambda m: m["step"])
    if last["step"] <= 0 or last["paper_flops"] <= 0:
        return
    per_step = last["paper_flops"] / last["step"]
    top = ax.secondary_xaxis("top", functions=(lambda x: x / per_step, lambda s: s * per_step))
    top.set_xlabel("step", fontsize=8)
    top.tick_params(labelsize=7)


def _flops_axis(ax: Any) -> None:
    ax.set_xlabel(FLOPS_LABEL, fontsize=8)
    ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)


def curves(run: Run, path: Path) -> Any:
    """One run's training loss (raw, faint, and a moving average) and validation metrics vs paper FLOPs."""
    panels = [(k, label) for k, label in VALID_PANELS if any(k in m for m in run.valid)]
    fig, axes = _figure(4.2 * (1 + len(panels)), 3.6, 1, 1 + len(panels))
    ax = axes[0]
    x, y = _series(run.train, "loss")
    if len(x):
        window = max(1, round(len(y) ** 0.5))
        ax.plot(x, y, color="C0", alpha=0.3, linewidth=0.8, label="raw")
        ax.plot(x, smooth(y, window), color="C0", linewidth=1.6, label=f"moving average over {window} logged steps")
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no training lines yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_title("training loss", fontsize=9)
    for ax, (key, label) in zip(axes[1:], panels):
        x, y = _series(run.valid, key)
        ax.plot(x, y, color="C1", marker="o", markersize=3)
        ax.set_title(label, fontsize=9)
    for ax in axes:
        _flops_axis(ax)
        _step_axis(ax, run)
    what = " ".join(s for s in (run.objective, run.size) if s)
    fig.suptitle(run.name + (f" ({what})" if what else ""), fontsize=10)
    fig.savefig(path, dpi=DPI)
    return fig


def compare_curves(runs: list[Run], path: Path) -> Any:
    """Validation MLM accuracy (solid) and RTD AUC (dashed, ELECTRA runs) of every run on one axis."""
    fig, (ax,) = _figure(7.5, 4.5)
    for i, run in enumerate(runs):
        color = f"C{i % 10}"
        for key, style, what in (("valid_mlm_accuracy", "-", "MLM accuracy"), ("valid_rtd_auc", "--", "RTD AUC")):
            x, y = _series(run.valid, key)
            if len(x):
                ax.plot(x, y, linestyle=style, marker="o", markersize=3, color=color, label=f"{run.name}: {what}")
    _flops_axis(ax)
    ax.set_ylabel("validation metric", fontsize=8)
    ax.set_title("validation MLM accuracy (solid) and RTD AUC (dashed)", fontsize=9)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=DPI)
    return fig


def _sci(v: float) -> str:
    """A log-axis tick: ``2e15``."""
    mantissa, exponent = f"{v:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _setup_colors(studies: list[StudyReport]) -> dict[str, str]:
    names = dict.fromkeys(s["name"] for study in studies for s in study.data["setups"] if s["pretrained"])
    return {name: f"C{i % 10}" for i, name in enumerate(names)}


def _score_axis(ax: Any, studies: list[StudyReport], colors: dict[str, str], value: Any, errors: bool) -> None:
    """Draws one score per setup: pretrained setups as markers at their FLOPs (joined across studies
    by setup name, in FLOPs order), setups without pre-training as dashed horizontal lines.

    `value(setup)` is the score, or None where it is missing; with `errors` it is a score entry
    (median, min, max) and the marker gets min–max error bars.
    """
    several = len(studies) > 1
    groups: dict[str, list[tuple[float, Any, str]]] = {}
    for study in studies:
        for setup in study.data["setups"]:
            v = value(setup)
            if v is None:
                continue
            label = setup["label"] + (f" ({study.name})" if several else "")
            if not setup["pretrained"]:
                ax.axhline(v["median"] if errors else v, linestyle="--", color="0.45", linewidth=1, label=label)
            elif setup["paper_flops"] > 0:
                groups.setdefault(setup["name"], []).append((setup["paper_flops"], v, setup["label"]))
    for name, points in groups.items():
        points.sort(key=lambda p: p[0])
        x = np.array([p[0] for p in points])
        y = np.array([p[1]["median"] if errors else p[1] for p in points])
        style = dict(color=colors[name], marker="o", linestyle="-" if len(points) > 1 else "none", label=points[0][2])
        if errors:
            spread = np.array([[p[1]["median"] - p[1]["min"], p[1]["max"] - p[1]["median"]] for p in points]).T
            ax.errorbar(x, y, yerr=spread, capsize=3, **style)
        else:
            ax.plot(x, y, **style)
        for xi, yi, (_, _, label) in zip(x, y, points):
            ax.annotate(label, (xi, yi), textcoords="offset points", xytext=(5, 4), fontsize=7)
    if groups:
        ax.set_xscale("log")
        xs = [p[0] for points in groups.values() for p in points]
        lo, hi = min(xs) / 2, max(xs) * 2  # room for the labels
        ax.set_xlim(lo, hi)
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
        if hi / lo <= 100:  # within two decades, ticks at 1, 2 and 5 × 10^k
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _sci(v)))
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        ax.text(0.5, 0.5, "no pre-trained setup with a score yet", ha="center", va="center",
                transform=ax.transAxes, fontsize=8)
    ax.set_xlabel(FLOPS_LABEL, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.grid(alpha=0.1, which="minor")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def score_vs_flops(studies: list[StudyReport], path: Path) -> Any:
    """Average downstream score (mean of the per-task medians) against pre-training FLOPs."""
    fig, (ax,) = _figure(7.0, 4.6)
    _score_axis(ax, studies, _setup_colors(studies), lambda s: s["average"], errors=False)
    ax.set_ylabel("average score (0–100)", fontsize=8)
    ax.set_title("downstream score vs pre-training compute", fontsize=9)
    fig.savefig(path, dpi=DPI)
    return fig


def scores_per_task(studies: list[StudyReport], tasks: list[dict[str, str]], path: Path) -> Any:
    """One subplot per task: median over seeds with min–max error bars against pre-training FLOPs."""
    cols = min(len(tasks), 3)
    rows = -(-len(tasks) // cols)
    fig, axes = _figure(4.6 * cols, 3.8 * rows, rows, cols)
    colors = _setup_colors(studies)
    for ax, task in zip(axes, tasks):
        _score_axis(ax, studies, colors, lambda s, name=task["name"]: s["scores"].get(name), errors=True)
        ax.set_title(task["label"], fontsize=9)
        ax.set_ylabel("score (0–100), median over seeds", fontsize=8)
    for ax in axes[len(tasks):]:
        ax.set_visible(False)
    fig.savefig(path, dpi=DPI)
    return fig
