"""``perftune monitor --html``: one self-contained page of a check and the version's history.

Sections: summary (verdict and findings), drift (a table per column; reference vs window distribution of
each column, drifted first), performance (estimated and realized beside the test split), service (latency,
with the share of served time the server waited for a CPU and the p95 without it, request rate, the model's
error rate against budgets, and the client error rate beside it), history (every stored series over time with
its adaptive baseline band, median ± k·scale, and the points that left it in red;
the client error rate, which has no baseline, as a plain line — checks stored before it existed have none).
PNGs are inline; nothing is fetched.
"""

from __future__ import annotations

import math
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from perftune.monitor.check import CheckResult, Monitor
from perftune.monitor.profile import CATEGORICAL, ColumnSummary
from perftune.report.page import CSS, img, png, table

MAX_COLUMNS = 24
HISTORY_SERIES = ("drift.share", "estimated.accuracy", "realized.accuracy", "realized.rmse", "latency_ms_p95",
                  "requests_per_s", "error_rate", "client_error_rate")  # fmt: skip
UNBASELINED = ("client_error_rate",)  # read from each stored check's system section: never judged, so no band


def _distributions(summaries: list[ColumnSummary], drifted: set[str]) -> bytes:
    from matplotlib.figure import Figure

    ordered = sorted(summaries, key=lambda s: (s.reference.name not in drifted, s.reference.name))[:MAX_COLUMNS]
    cols = 4
    rows = max(1, math.ceil(len(ordered) / cols))
    fig = Figure(figsize=(3.2 * cols, 2.3 * rows))
    for i, summary in enumerate(ordered):
        ax = fig.add_subplot(rows, cols, i + 1)
        ref = summary.reference
        if ref.kind == CATEGORICAL:
            labels = [f"{c:g}" for c in ref.categories] + (["other"] if summary.unseen else [])
            r = np.asarray(ref.frequencies, dtype=float)
            c = summary.frequencies.astype(float)
            if summary.unseen:
                r, c = np.append(r, 0.0), np.append(c, float(summary.unseen))
            x = np.arange(len(labels))
            ax.bar(x - 0.2, r / max(r.sum(), 1), 0.4, label="reference", color="#999")
            ax.bar(x + 0.2, c / max(c.sum(), 1), 0.4, label="window", color="#1f77b4")
            ax.set_xticks(x, labels, fontsize=7)
        else:
            counts = np.asarray(ref.counts, dtype=float)
            keep = counts > 0
            centers = np.asarray(ref.sums)[keep] / counts[keep]
            window = summary.counts.astype(float)[keep]
            ax.plot(centers, counts[keep] / max(counts.sum(), 1), color="#999", label="reference")
            ax.plot(centers, window / max(summary.counts.sum(), 1), color="#1f77b4", label="window")
            ax.tick_params(labelsize=7)
        color = "#b00" if ref.name in drifted else "#222"
        ax.set_title(ref.name + (" (drift)" if ref.name in drifted else ""), fontsize=9, color=color)
        if i == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return png(fig)


def _history(results: list[dict[str, Any]]) -> bytes | None:
    from matplotlib.figure import Figure

    series: dict[str, list[tuple[datetime, float, float | None, float | None, bool]]] = {}
    for result in results:
        at = datetime.fromisoformat(result["at"])
        for verdict in result.get("baselines", []):
            if verdict["series"] in HISTORY_SERIES and verdict["value"] is not None:
                series.setdefault(verdict["series"], []).append(
                    (at, verdict["value"], verdict["median"], verdict["scale"], verdict["flagged"])
                )
        for name in UNBASELINED:
            value = result.get("system", {}).get(name)  # None in checks stored before the series existed
            if value is not None:
                series.setdefault(name, []).append((at, value, None, None, False))
    if not series:
        return None
    names = [n for n in HISTORY_SERIES if n in series]
    fig = Figure(figsize=(11, 2.2 * len(names)))
    k = results[-1].get("baseline_k", 3.5)
    for i, name in enumerate(names):
        ax = fig.add_subplot(len(names), 1, i + 1)
        points = series[name]
        times = [p[0] for p in points]
        ax.plot(times, [p[1] for p in points], marker=".", color="#1f77b4", label=name)
        band = [(t, m, s) for t, _, m, s, _ in points if m is not None and s is not None]
        if band:
            ax.fill_between(
                [b[0] for b in band], [b[1] - k * b[2] for b in band], [b[1] + k * b[2] for b in band],
                color="#2ca02c", alpha=0.15, label="baseline (median ± k·scale)",
            )  # fmt: skip
        flagged = [(t, v) for t, v, _, _, f in points if f]
        if flagged:
            ax.scatter([f[0] for f in flagged], [f[1] for f in flagged], color="#d62728", zorder=3, label="anomaly")
        ax.set_ylabel(name, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return png(fig)


def write_page(monitor: Monitor, result: CheckResult, path: Path) -> Path:
    """Write the page of ``result`` (and the version's stored history) to ``path``."""
    from perftune.monitor.store import recent_checks

    drift = result.drift
    drifted = set(drift.drifted_columns)
    verdict = (
        '<p class="good">healthy: no drift, degradation, broken budget or anomaly</p>'
        if result.healthy
        else f'<p class="bad">{len(result.findings)} findings</p><ul>'
        + "".join(f"<li>{escape(f)}</li>" for f in result.findings)
        + "</ul>"
    )
    w = result.window
    summary = table(
        ["model", "version", "check", "at", "window", "rows", "requests"],
        [[result.model, result.version, result.check_id[:12], result.at, f"{w['start']} → {w['end']}", w["rows"],
          w["requests"]]],
    )  # fmt: skip
    rows = [
        [c.column, c.kind, c.test, c.score, ("< " if c.statistic == "p_value" else "≥ ") + f"{c.threshold:g}",
         c.reference_rows, c.window_rows, f"{c.missing_rate:.1%}", f"{c.out_of_range_rate:.1%}",
         "drift" if c.drifted else ""]
        for c in [*drift.columns, *([drift.prediction] if drift.prediction else [])]
    ]  # fmt: skip
    drift_table = table(
        ["column", "kind", "test", "score", "drift when", "n reference", "n window", "missing", "out of range", ""],
        rows,
    )
    images = ""
    if monitor.last_summary is not None:
        images = img(_distributions(monitor.last_summary.columns, drifted), "reference vs window distributions")
    perf = table(
        ["kind", "metric", "value", "95 % low", "95 % high", "rows", "test split", "degraded", "note"],
        [[p.kind, p.metric, p.value if p.value is not None else "–", p.low if p.low is not None else "–",
          p.high if p.high is not None else "–", p.rows, p.test_value if p.test_value is not None else "–",
          "yes" if p.degraded else "", p.note] for p in result.performance],
    )  # fmt: skip
    s = result.system
    service = table(
        ["latency p50 ms", "latency p95 ms", "p95 without CPU wait ms (judged)", "CPU wait share",
         "model alone p95 ms (registration)", "requests/s",
         "error rate (server-side failures)", "client error rate (refused, aborted, other models; never judged)",
         "budgets", "broken"],
        [[_dash(s.latency_ms_p50), _dash(s.latency_ms_p95), _dash(s.latency_ms_p95_own), _dash(s.cpu_wait_share),
          _dash(s.registered_latency_ms_p95),
          _dash(s.requests_per_s), _dash(s.error_rate), _dash(s.client_error_rate),
          ", ".join(f"{k} <= {v:g}" for k, v in s.budgets.items()), "; ".join(s.broken)]],
    )  # fmt: skip
    history_results = recent_checks(monitor.engine, result.model, result.version)
    for past in history_results:
        past["baseline_k"] = monitor.settings.baseline.k
    chart = _history(history_results)
    history = img(chart, "monitored series over time with their baselines") if chart else "<p>no history yet</p>"
    baselines = table(
        ["series", "value", "median", "robust z", "flagged", "since"],
        [[v.series, v.value, _dash(v.median), _dash(v.z), "yes" if v.flagged else "", v.since or ""]
         for v in result.baselines],
    )  # fmt: skip
    html = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>perftune monitor: {escape(result.model)} v{escape(result.version)}</title><style>{CSS}</style></head><body>
<h1>Monitor: {escape(result.model)} v{escape(result.version)}</h1>
<section id="summary"><h2>Summary</h2>{summary}{verdict}</section>
<section id="drift"><h2>Drift</h2><p>Dataset drift: {"yes" if drift.dataset_drift else "no"} —
{drift.drifted_share:.0%} of columns drifted (drift_share {drift.drift_share:g}).</p>{drift_table}{images}</section>
<section id="performance"><h2>Performance</h2>{perf}</section>
<section id="service"><h2>Service</h2>{service}</section>
<section id="history"><h2>History and baselines</h2>{history}{baselines}</section>
</body></html>"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html)
    return path


def _dash(value: float | None) -> Any:
    return "–" if value is None else value
