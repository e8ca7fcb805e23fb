"""Rich rendering for the CLI: the live study display and the result tables."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from perftune.results import GroupResult, StudyResult, contention_line, contention_totals
from perftune.results import TrialState as S

_KEY_METRICS = ("train_time_s", "memory_mb_peak", "latency_ms_p95", "model_size_bytes")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class LiveProgress:
    """A Rich live panel: trials done / running / stopped by budget / failed, best feasible, elapsed."""

    def __init__(self, console: Console, study: str) -> None:
        self.console, self.study = console, study
        self.t0 = time.time()
        self.snapshot: dict[str, Any] = {}
        self.finished: list[GroupResult] = []
        self.live = Live(
            self._render(), console=console, refresh_per_second=4, transient=True, get_renderable=self._render
        )

    def __enter__(self) -> LiveProgress:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.live.__exit__(*exc)

    def group_started(self, dataset: str, model: str, planned: int) -> None:
        self.snapshot = {
            "dataset": dataset,
            "model": model,
            "planned": planned,
            "running": 0,
            "counts": {},
            "best": None,
            "elapsed_s": 0.0,
        }

    def trial_update(self, snapshot: dict[str, Any]) -> None:
        self.snapshot = snapshot

    def group_finished(self, group: GroupResult) -> None:
        self.finished.append(group)
        best = group.best
        primary = group.objectives[0].metric
        shown = f"{primary}={_fmt(best.metrics[primary])}" if best else "no feasible trial"
        c = group.counts()
        self.console.print(
            f"[green]✓[/] {group.dataset} × {group.model}: {len(group.trials)} trials "
            f"({c[S.COMPLETED]} completed, {c[S.STOPPED_BUDGET]} stopped by budget, "
            f"{c[S.STOPPED_EARLY]} stopped early, {c[S.FAILED]} failed); best feasible {shown}"
        )

    def _render(self) -> Any:
        s = self.snapshot
        elapsed = time.time() - self.t0
        if not s:
            return Text(f"{self.study}: preparing data and Ray … {elapsed:.0f}s")
        counts = s.get("counts", {})
        done = sum(counts.values())
        table = Table.grid(padding=(0, 2))
        table.add_row(
            Text(f"{self.study} · {s['dataset']} × {s['model']}", style="bold"), Text(f"elapsed {elapsed:.0f}s")
        )
        table.add_row(f"trials {done}/{s.get('planned', '?')} done", f"running {s.get('running', 0)}")
        table.add_row(f"completed {counts.get(S.COMPLETED, 0)}", f"stopped by budget {counts.get(S.STOPPED_BUDGET, 0)}")
        table.add_row(f"stopped early {counts.get('stopped_early', 0)}", f"failed {counts.get('failed', 0)}")
        best = s.get("best")
        line = (
            f"best feasible: {best['metric']} = {_fmt(best['value'])}  {best['params']}"
            if best
            else "best feasible: none yet"
        )
        return Group(table, Text(line))


def result_table(result: StudyResult) -> Table:
    """Best feasible trial per dataset × model."""
    table = Table(title=f"{result.name}: best feasible trial per dataset × model", title_justify="left")
    for column in ("dataset", "model", "trials (done/budget/early/failed)", "objective"):
        table.add_column(column, overflow="fold")
    table.add_column("params", no_wrap=True)
    for metric in _KEY_METRICS:
        table.add_column(metric, justify="right", overflow="fold")
    table.add_column("mlflow run", overflow="fold")
    for group in result.groups:
        c = group.counts()
        trials = f"{len(group.trials)} ({c[S.COMPLETED]}/{c[S.STOPPED_BUDGET]}/{c[S.STOPPED_EARLY]}/{c[S.FAILED]})"
        best = group.best
        if best is None:
            table.add_row(group.dataset, group.model, trials, "no feasible trial", *[""] * (len(_KEY_METRICS) + 2))
            continue
        primary = group.objectives[0].metric
        params = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items())
        table.add_row(
            group.dataset,
            group.model,
            trials,
            f"{primary}={_fmt(best.metrics.get(primary))}",
            params,
            *[_fmt(best.metrics.get(m, "")) for m in _KEY_METRICS],
            (best.mlflow_run_id or "")[:12],
        )
    return table


def compute_line(result: StudyResult) -> str:
    c = result.compute()
    line = (
        f"compute: {c['cpu_s']:.1f} CPU-s in {c['trial_s']:.1f} trial-s (wall {c['wall_s']:.1f}s); "
        f"stopping saved ≈{c['saved_cpu_s_est']:.1f} CPU-s of a ≈{c['counterfactual_cpu_s']:.1f} CPU-s full search "
        f"(×{c['savings_factor_est']:.2f})"
    )
    contention = contention_line(contention_totals(result.trials))
    return f"{line}\n{contention}" if contention else line


def savings_table(report: Any) -> Table:
    """RQ2 per dataset × model."""
    from perftune.analysis.savings import COLUMNS

    table = Table(title=f"RQ2: policy {report.policy} vs full search", title_justify="left", caption=report.headline())
    table.add_column(COLUMNS[0], no_wrap=True)
    table.add_column(COLUMNS[1], no_wrap=True)
    for column in COLUMNS[2:]:
        table.add_column(column, justify="right")
    for group in report.groups:
        table.add_row(*[_fmt(cell) for cell in group.row()])
    return table


def compare_tables(comparison: dict[str, Any]) -> list[Table]:
    """`perftune compare`: the two studies, then their groups side by side."""
    a, b = comparison["studies"]
    head = Table(title="studies", title_justify="left")
    head.add_column("")
    head.add_column(f"A: {a['name']}")
    head.add_column(f"B: {b['name']}")
    for key in (
        "out",
        "policy",
        "constraints",
        "spec_fingerprint",
        "trials",
        "cpu_s",
        "trial_s",
        "wall_s",
        "saved_cpu_s_est",
    ):
        head.add_row(key, _fmt(a[key]), _fmt(b[key]))
    groups = Table(title="per dataset × model (A | B)", title_justify="left")
    groups.add_column("dataset", no_wrap=True)
    groups.add_column("model", no_wrap=True)
    for column in ("trials", "feasible", "stopped", "CPU-s", "best", "best params A", "best params B"):
        groups.add_column(column, overflow="fold")

    def pair(row: dict[str, Any], key: str) -> str:
        return (
            f"{_fmt(row['a'][key]) if row['a'][key] is not None else '—'} | "
            f"{_fmt(row['b'][key]) if row['b'][key] is not None else '—'}"
        )

    for row in comparison["groups"]:
        metric = row["a"].get("metric") or row["b"].get("metric") or ""
        groups.add_row(
            row["dataset"],
            row["model"],
            pair(row, "trials"),
            pair(row, "feasible"),
            pair(row, "stopped"),
            pair(row, "cpu_s"),
            f"{metric}: {pair(row, 'best')}",
            _fmt(row["a"]["best_params"] or "—"),
            _fmt(row["b"]["best_params"] or "—"),
        )
    return [head, groups]


# ------------------------------------------------------------------------------------------------ registry


def _v(version: str | None) -> str:
    return f"v{version}" if version else "—"


def models_table(summaries: list[Any], tracking_uri: str) -> Table:
    from perftune.registry.catalog import CHALLENGER, CHAMPION, KEY_METRICS

    table = Table(title=f"registered models ({tracking_uri})", title_justify="left")
    table.add_column("model", no_wrap=True)
    for column in ("versions", CHAMPION, CHALLENGER, "previous", "latest"):
        table.add_column(column, justify="right", no_wrap=True)
    shown = [m for m in KEY_METRICS if any(m in s.metrics for s in summaries)]
    for metric in shown:
        table.add_column(metric, justify="right")
    for s in summaries:
        table.add_row(
            s.name,
            f"{s.versions}" + (f" ({s.archived} archived)" if s.archived else ""),
            _v(s.aliases.get(CHAMPION)),
            _v(s.aliases.get(CHALLENGER)),
            _v(s.previous_champion),
            _v(s.latest),
            *(_fmt(s.metrics[m]) if m in s.metrics else "—" for m in shown),
        )
    return table


def measured_under(metrics: dict[str, float]) -> str:
    """The conditions a version's system metrics were measured under: rounds, CPU waits, the machine's load."""
    parts = []
    if "latency_rounds" in metrics:
        parts.append(
            f"latency in {metrics['latency_rounds']:g} interleaved rounds ({metrics.get('latency_samples', 0):g} calls)"
        )
    if "latency_cpu_wait_share" in metrics:
        parts.append(f"waited {metrics['latency_cpu_wait_share']:.0%} of the calls' time for a CPU (left out)")
    if "measure.runnable_per_core" in metrics:
        parts.append(f"{metrics['measure.runnable_per_core']:.2g} runnable per core")
    if "measure.other_cpu_share" in metrics:
        parts.append(f"other processes used {metrics['measure.other_cpu_share']:.0%} of the CPU")
    if "threads" in metrics:
        parts.append(f"{metrics['threads']:g} threads")
    return "; ".join(parts) or "not recorded (registered by an older perftune)"


def version_tables(detail: Any) -> list[Table]:
    """``perftune models show``: metrics and gate, then lineage."""
    from datetime import datetime, timezone

    created = datetime.fromtimestamp(detail.created_at / 1000, timezone.utc).isoformat(timespec="seconds")
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold", no_wrap=True)
    head.add_column(overflow="fold")
    head.add_row("model", f"{detail.name} v{detail.version}")
    head.add_row("aliases", ", ".join(detail.aliases) or "—")
    head.add_row("status", detail.status)
    head.add_row("created", created)
    head.add_row("gate", detail.gate)
    for check in detail.gate_checks:
        mark = "–" if not check.get("applies", True) else "✓" if check.get("passed") else "✗"
        measured = f"{check.get('metric')} = {_fmt(check.get('value'))}" if mark != "–" else "n/a for this task"
        if check.get("low") is not None and check.get("high") is not None:
            measured += f" [{_fmt(check['low'])}, {_fmt(check['high'])}]"
        note = f"; {check['note']}" if check.get("note") else ""
        head.add_row("", f"{mark} {check.get('threshold')} ({measured}){note}")
    head.add_row("measured under", measured_under(detail.metrics))
    head.add_row("source", detail.source)
    head.add_row("register run", detail.run_id or "—")
    metrics = Table(title="held-out test metrics (ML and system)", title_justify="left")
    metrics.add_column("metric", no_wrap=True)
    metrics.add_column("value", justify="right")
    for key, value in sorted(detail.metrics.items()):
        metrics.add_row(key, _fmt(value))
    lineage = Table(title="lineage", title_justify="left")
    lineage.add_column("tag", no_wrap=True)
    lineage.add_column("value", overflow="fold")
    for key, value in detail.lineage.items():
        lineage.add_row(key, value)
    return [head, metrics, *([retraining_table(detail.retraining)] if detail.retraining else []), lineage]


def retraining_table(r: dict[str, Any]) -> Table:
    """Why the retraining loop made this version: trigger, data, warm start, comparison and decision."""
    table = Table(title="retraining (why this version exists)", title_justify="left")
    table.add_column("step", no_wrap=True)
    table.add_column("", overflow="fold")
    trigger, data, warm = r.get("trigger") or {}, r.get("data") or {}, r.get("warm_start") or {}
    origin = r.get("origin_study_run_id", "?")
    table.add_row("retrained from", f"v{r.get('from_version', '?')} (original study run {origin})")
    table.add_row("trigger", "; ".join(trigger.get("reasons", [])) + (f" (monitor check {trigger['check_id']})"
                  if trigger.get("check_id") else ""))  # fmt: skip
    window = data.get("scoring_window") or {}
    table.add_row(
        "data",
        f"store:{data.get('store')}: {(data.get('training_data') or {}).get('rows', 0)} training rows + "
        f"{window.get('used_rows', 0)} labelled scoring rows of v{window.get('version')} "
        f"({window.get('start')} … {window.get('end')}), {data.get('holdout_rows', 0)} held out; "
        f"half-life {data.get('recency_half_life')}",
    )
    table.add_row("warm start", f"{len(warm.get('trials', []))} best trials of {warm.get('study')}"
                  if warm.get("trials") else "none (cold start)")  # fmt: skip
    comparison = r.get("comparison") or {}
    for where, c in (comparison.get("comparisons") or {}).items():
        table.add_row(f"compared on {where}", f"{c['metric']} v{comparison['champion']} {_fmt(c['champion'])} → "
                      f"v{comparison['challenger']} {_fmt(c['challenger'])} on {c['rows']} rows, {c['test']} "
                      f"p = {c['p_value']:.3g}")  # fmt: skip
    system = comparison.get("system") or {}
    if system:
        a, b = system.get("champion", {}), system.get("challenger", {})
        table.add_row("system, side by side", ", ".join(
            f"{m} {_fmt(a.get(m))} → {_fmt(b.get(m))}" for m in ("latency_ms_p95", "model_size_bytes",
                                                                  "predict_memory_mb") if m in a))  # fmt: skip
    if comparison.get("importance"):
        i = comparison["importance"]
        table.add_row("importance", f"top {', '.join(i['champion_top'][:3])} → {', '.join(i['challenger_top'][:3])}")
    table.add_row("decision", str(r.get("decision", "—")))
    return table


def history_table(name: str, entries: list[Any]) -> Table:
    table = Table(title=f"audit log: {name}", title_justify="left")
    for column in ("#", "time (UTC)", "user", "action", "move", "reason"):
        table.add_column(column, no_wrap=column != "reason", overflow="fold")
    for e in entries:
        at = e.at.strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(str(e.id), at, e.user, e.action, e.move(), e.reason or "—")
    return table


def reproduction_table(rep: Any) -> Table:
    table = Table(title=f"reproduce {rep.name} v{rep.version}", title_justify="left")
    for column in ("metric", "registered", "reproduced", "ratio", "check"):
        table.add_column(column, justify="left" if column in ("metric", "check") else "right", no_wrap=True)
    for d in rep.diffs:
        ratio = d.reproduced / d.registered if d.registered else float("nan")
        check = ("[green]identical[/]" if d.matches else "[red]differs[/]") if d.deterministic else "measured"
        table.add_row(d.metric, _fmt(d.registered), _fmt(d.reproduced), f"{ratio:.3g}", check)
    return table
