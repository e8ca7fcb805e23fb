"""Matplotlib figures of a study, returned as PNG bytes.

Uses matplotlib's object API (``Figure``), not pyplot: no global state, no display, safe in any process.
"""

from __future__ import annotations

import math
from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullFormatter

from perftune.analysis.effects import MetricEffects
from perftune.report.page import png
from perftune.results import GroupResult, TrialRecord, TrialState

_PALETTE = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#000000",
]
_STATUS_COLOR = {
    TrialState.COMPLETED: "#1f77b4",
    TrialState.STOPPED_BUDGET: "#d62728",
    TrialState.STOPPED_EARLY: "#ff7f0e",
    TrialState.FAILED: "#7f7f7f",
}


def plain_numbers(axis: Any, minor: bool = False) -> None:
    """Label a log axis with plain numbers (0.5, 2, 100), not 10^x; the minor ticks too with ``minor`` (for an
    axis spanning less than a decade, which has one major tick or none)."""
    plain = FuncFormatter(lambda value, _: f"{value:.6g}" if value >= 1 else f"{value:.2g}")
    axis.set_major_formatter(plain)
    axis.set_minor_formatter(plain if minor else NullFormatter())


def learning_curves(
    group: GroupResult, histories: dict[str, list[dict[str, float]]], bounds: dict[str, float]
) -> bytes:
    """ML metric, training time and memory against steps, one line per trial; stopped trials end in ×."""
    primary = group.objectives[0].metric
    metrics = [primary, "train_time_s", "memory_mb"]
    fig = Figure(figsize=(15, 4.2))
    fig.subplots_adjust(left=0.05, right=0.98, top=0.86, bottom=0.22, wspace=0.22)
    axes = fig.subplots(1, 3)
    for ax, metric in zip(axes, metrics, strict=True):
        for trial in group.trials:
            points = [(w["steps"], w[metric]) for w in histories.get(trial.trial_id, []) if metric in w]
            if not points and metric in trial.metrics and "steps" in trial.metrics:
                points = [(trial.metrics["steps"], trial.metrics[metric])]
            if not points:
                continue
            xs, ys = zip(*points, strict=True)
            color = _STATUS_COLOR.get(trial.status, "#333333")
            ax.plot(xs, ys, color=color, alpha=0.55, linewidth=1)
            if trial.status != TrialState.COMPLETED:
                ax.plot(xs[-1], ys[-1], marker="x", color=color, markersize=8, markeredgewidth=2)
        if metric in bounds:
            ax.axhline(bounds[metric], color="black", linestyle="--", linewidth=1, label=f"budget {bounds[metric]:g}")
            ax.legend(loc="best", fontsize=8)
        ax.set_xscale("log")
        plain_numbers(ax.xaxis)
        ax.set_xlabel("steps")
        ax.set_title(metric)
    handles = [Line2D([], [], color=c, label=s) for s, c in _STATUS_COLOR.items()]
    handles.append(Line2D([], [], color="black", marker="x", linestyle="", label="stopped here"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8)
    fig.suptitle(f"{group.dataset} × {group.model}: learning curves", fontsize=11)
    return png(fig)


def pareto(group: GroupResult) -> bytes:
    """The first two objectives (or the primary one against train time): all trials, feasible ones, front."""
    x_metric = group.objectives[1].metric if len(group.objectives) > 1 else "train_time_s"
    y_metric = group.objectives[0].metric
    fig = Figure(figsize=(6.5, 4.5))
    fig.subplots_adjust(left=0.14, right=0.97, top=0.9, bottom=0.13)
    ax = fig.subplots()

    def xy(trials: list[TrialRecord]) -> tuple[list[float], list[float]]:
        kept = [t for t in trials if x_metric in t.metrics and y_metric in t.metrics]
        return [t.metrics[x_metric] for t in kept], [t.metrics[y_metric] for t in kept]

    infeasible = [t for t in group.trials if not t.feasible]
    ax.scatter(*xy(infeasible), color="#bbbbbb", label="infeasible / stopped", s=22)
    ax.scatter(*xy(group.feasible), color="#1f77b4", label="feasible", s=26)
    front = sorted(group.pareto, key=lambda t: t.metrics.get(x_metric, math.inf))
    if front:
        xs, ys = xy(front)
        ax.plot(xs, ys, color="#d62728", marker="o", label="Pareto front (feasible)", linewidth=1.5)
    best = group.best
    if best is not None and x_metric in best.metrics:
        ax.scatter(
            [best.metrics[x_metric]],
            [best.metrics[y_metric]],
            marker="*",
            s=220,
            color="gold",
            edgecolor="black",
            zorder=5,
            label="best feasible",
        )
    ax.set_xlabel(x_metric)
    ax.set_ylabel(y_metric)
    if x_metric.endswith(("_s", "_ms_mean", "_bytes")):
        ax.set_xscale("log")
    ax.legend(fontsize=8)
    ax.set_title(f"{group.dataset} × {group.model}: {y_metric} vs {x_metric}")
    return png(fig)


def effects_grid(results: list[MetricEffects], title: str) -> bytes:
    """RQ1 marginal effects, one panel per hyperparameter and one line per metric: the metric's median at each
    value of the hyperparameter divided by its median at the first value (log scale), so that every metric
    shares one axis and a point at 4 reads "four times the first value's". The legend gives each metric's
    importance share for that hyperparameter. A metric whose medians are not all positive is left out."""
    params = sorted({e.param for r in results for e in r.effects})
    height = 2.9 * len(params) + 0.5
    fig = Figure(figsize=(9.5, height))
    fig.subplots_adjust(left=0.09, right=0.7, top=1 - 0.45 / height, bottom=0.5 / height, hspace=0.45)
    axes = fig.subplots(len(params), 1, squeeze=False)[:, 0]
    colors = {r.metric: _PALETTE[i % len(_PALETTE)] for i, r in enumerate(results)}
    for ax, param in zip(axes, params, strict=True):
        labels: list[Any] = []
        span = [1.0, 1.0]
        for result in results:
            effect = next((e for e in result.effects if e.param == param), None)
            if effect is None or not effect.median or min(effect.median) <= 0:
                continue
            numeric = all(isinstance(v, (int, float)) for v in effect.values)
            xs = effect.values if numeric else list(range(len(effect.values)))
            labels = labels or ([] if numeric else [str(v) for v in effect.values])
            share = result.importance.get(param)
            ys = [m / effect.median[0] for m in effect.median]
            span = [min(span[0], *ys), max(span[1], *ys)]
            label = result.metric + (f" ({share:.0%})" if share is not None else "")
            ax.plot(xs, ys, marker="o", markersize=3.5, linewidth=1.4, color=colors[result.metric], label=label)
            if numeric and min(xs) > 0 and max(xs) / min(xs) >= 16:
                ax.set_xscale("log")
        if labels:
            ax.set_xticks(range(len(labels)), labels)
        ax.set_yscale("log")
        plain_numbers(ax.yaxis, minor=span[1] / span[0] < 10)
        if ax.get_xscale() == "log":
            plain_numbers(ax.xaxis)
        ax.axhline(1.0, color="#999999", linewidth=0.8)
        ax.set_xlabel(param)
        ax.set_ylabel("× median at first value")
        ax.tick_params(labelsize=7)
        if ax.lines:
            ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7, title="metric (importance)")
    fig.suptitle(title, fontsize=11)
    return png(fig)
