"""A check for people (Rich, on the console) and for pipelines (JSON)."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from perftune.monitor.check import CheckResult, SystemMetrics


def _num(value: float | None, spec: str = ".4g") -> str:
    return "–" if value is None or value != value else format(value, spec)  # None or NaN (not tested)


def to_json(result: CheckResult, indent: int | None = 2) -> str:
    return json.dumps(result.to_dict(), indent=indent, sort_keys=True)


def print_check(console: Console, result: CheckResult) -> None:
    w = result.window
    span = f"{w['start']} → {w['end']}" if w["start"] else "empty"
    console.print(
        f"[bold]{escape(result.model)} v{result.version}[/] · window {w['rows']} rows in {w['requests']} requests "
        f"({escape(span)}) · check {result.check_id[:12]}",
        highlight=False,
    )
    drift = result.drift
    table = Table(title=f"drift per column (reference = {result.reference})", title_justify="left", show_edge=False)
    for header in ("column", "kind", "test", "score", "threshold", "n ref/window", "missing", "out of range", ""):
        table.add_column(header, justify="left" if header in ("column", "kind", "test") else "right")
    rows = [*drift.columns, *([drift.prediction] if drift.prediction else [])]
    for c in rows:
        relation = "<" if c.statistic == "p_value" else "≥"
        table.add_row(
            escape(c.column), c.kind, c.test, _num(c.score), f"{relation} {c.threshold:g}",
            f"{c.reference_rows}/{c.window_rows}", f"{c.missing_rate:.1%}", f"{c.out_of_range_rate:.1%}",
            "[red]drift[/]" if c.drifted else "",
        )  # fmt: skip
    console.print(table)
    if not drift.enough_rows:
        console.print(f"[yellow]window too small to test drift ({drift.window_rows} rows)[/]")
    console.print(
        f"dataset drift: {'[red]yes[/]' if drift.dataset_drift else 'no'} "
        f"({drift.drifted_share:.0%} of columns drifted; drift_share {drift.drift_share:g})"
    )
    for figure in result.performance:
        shown = (
            f"{figure.value:.4g} [{_num(figure.low)}, {_num(figure.high)}] on {figure.rows} rows"
            if figure.value is not None
            else figure.note
        )
        versus = f" · test split {figure.test_value:.4g}" if figure.test_value is not None else ""
        flag = " [red]degraded[/]" if figure.degraded else ""
        console.print(f"{figure.kind} {figure.metric}: {escape(shown)}{versus}{flag}", highlight=False)
    s = result.system
    console.print(
        f"service: latency p50 {_num(s.latency_ms_p50)} ms, p95 {_num(s.latency_ms_p95)} ms "
        f"(model alone at registration: {_num(s.registered_latency_ms_p95)} ms) · {_num(s.requests_per_s)} req/s · "
        + error_rates(s)
        + waited(s),
        highlight=False,
    )
    flagged = [v for v in result.baselines if v.flagged]
    learning = sum(v.z is None for v in result.baselines)
    console.print(
        f"baselines: {len(result.baselines)} series, {len(flagged)} departed from their normal"
        + (f", {learning} still learning" if learning else "")
    )
    if result.healthy:
        console.print("[green]healthy[/]: no drift, degradation, broken budget or anomaly")
    else:
        console.print(f"[red]{len(result.findings)} findings[/]:")
        for finding in result.findings:
            console.print(f"  • {escape(finding)}", highlight=False)


def waited(system: SystemMetrics) -> str:
    """What the server received, where the scoring log records it (an empty string otherwise)."""
    if system.cpu_wait_share is None:
        return ""
    return (
        f" · measured under: the server waited for a CPU {system.cpu_wait_share:.0%} of the served time, "
        f"p95 without the wait {_num(system.latency_ms_p95_own)} ms (what budgets and baselines judge)"
    )


def error_rates(system: SystemMetrics) -> str:
    """Both rates in one phrase: the model's (what probation judges) and the clients' (reported apart)."""
    if system.error_rate is None and system.client_error_rate is None:
        return "error rate – (no --server)"
    return (
        f"error rate {_num(system.error_rate, '.2%')} (server-side failures) · client error rate "
        f"{_num(system.client_error_rate, '.2%')} (refused, aborted or for another model; never judged)"
    )


def summary_line(result: CheckResult) -> str:
    state = "healthy" if result.healthy else f"{len(result.findings)} findings"
    rates = f", {error_rates(result.system)}" if result.system.error_rate is not None else ""
    return f"{result.at} {result.model} v{result.version}: {result.window['rows']} rows, {state}{rates}"


def as_gauges(result: CheckResult) -> dict[str, Any]:
    """Values for the ``--watch`` Prometheus gauges (see :mod:`perftune.monitor.watch`)."""
    out: dict[str, Any] = {
        "drift_share": result.drift.drifted_share,
        "dataset_drift": float(result.drift.dataset_drift),
    }
    out["columns"] = {c.column: (c.score, float(c.drifted)) for c in result.drift.columns}
    out["performance"] = {(p.kind, p.metric): p.value for p in result.performance if p.value is not None}
    out["anomalies"] = {v.series: float(v.flagged) for v in result.baselines}
    out["error_rates"] = {"model": result.system.error_rate, "client": result.system.client_error_rate}
    out["healthy"] = float(result.healthy)
    return out
