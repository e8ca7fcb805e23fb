"""Matplotlib figures of a study, returned as PNG bytes.

Uses matplotlib's object API (``Figure``), not pyplot: no global state, no display, safe in any process.
"""

from __future__ import annotations

import math

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from perftune.analysis.effects import MetricEffects
from perftune.report.page import png
from perftune.results import GroupResult, TrialRecord, TrialState

_STATUS_COLOR = {
    TrialState.COMPLETED: "#1f77b4",
    TrialState.STOPPED_BUDGET: "#d62728",
    TrialState.STOPPED_EARLY: "#ff7f0e",
    TrialState.FAILED: "#7f7f7f",
}


def learning_curves(
    group: GroupResult, histories: dict[str, list[dict[str, float]]], bounds: dict[str, float]
) -> bytes:
    """ML metric, training time and memory against steps, one line per trial; stopped trials end in ×."""
    primary = group.objectives[0].metric
    metrics = [primary, "train_time_s", "memory_mb"]
    fig = Figure(figsize=(15, 3.8))
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
        ax.set_xlabel("steps")
        ax.set_title(metric)
    handles = [Line2D([], [], color=c, label=s) for s, c in _STATUS_COLOR.items()]
    handles.append(Line2D([], [], color="black", marker="x", linestyle="", label="stopped here"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, bbox_to_anchor=(0.5, -0.08))
    fig.suptitle(f"{group.dataset} × {group.model}: learning curves", fontsize=11)
    return png(fig)


def pareto(group: GroupResult) -> bytes:
    """The first two objectives (or the primary one against train time): all trials, feasible ones, front."""
    x_metric = group.objectives[1].metric if len(group.objectives) > 1 else "train_time_s"
    y_metric = group.objectives[0].metric
    fig = Figure(figsize=(6.5, 4.5))
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
    """RQ1 marginal effects: one row per metric, one column per hyperparameter (median and IQR)."""
    params = sorted({e.param for r in results for e in r.effects})
    fig = Figure(figsize=(3.6 * len(params), 2.4 * len(results)), layout="constrained")
    axes = fig.subplots(len(results), len(params), squeeze=False)
    for row, result in enumerate(results):
        for col, param in enumerate(params):
            ax = axes[row][col]
            effect = next((e for e in result.effects if e.param == param), None)
            if effect is None:
                ax.set_visible(False)
                continue
            numeric = all(isinstance(v, (int, float)) for v in effect.values)
            xs = effect.values if numeric else list(range(len(effect.values)))
            ax.plot(xs, effect.median, marker="o", color="#1f77b4")
            ax.fill_between(xs, effect.q25, effect.q75, alpha=0.25, color="#1f77b4")
            if numeric and min(xs) > 0 and max(xs) / min(xs) >= 16:
                ax.set_xscale("log")
            share = result.importance.get(param)
            ax.set_title(f"{result.metric} · {param}" + (f" ({share:.0%})" if share is not None else ""), fontsize=8)
            ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=11)
    return png(fig)
