"""One self-contained HTML page per study: inline PNGs and CSS, nothing fetched from the network.

Sections: summary, spec, datasets, best feasible trials, RQ1 (importance and effects), learning curves,
Pareto fronts, RQ2 (savings; filled once ``perftune savings`` has run). The RQ1 numbers are also written to
``effects.json``, to ``summary.json`` and to the study's MLflow run.
"""

from __future__ import annotations

import json
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from html import escape
from pathlib import Path

from perftune.analysis.effects import MetricEffects, analyze_groups, effects_digest, preload
from perftune.analysis.savings import COLUMNS, SavingsReport
from perftune.parallel import local_pool
from perftune.report import plots
from perftune.report.page import CSS, fmt, img, table
from perftune.results import (
    GroupResult,
    StudyResult,
    add_to_summary,
    contention_line,
    contention_totals,
    load_histories,
    load_study,
)
from perftune.spec import ConstraintSpec


class _Images:
    """Keeps each PNG both inline (data URI) and as a file next to index.html."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0

    def tag(self, png: bytes, name: str, alt: str) -> str:
        self.count += 1
        filename = f"{self.count:02d}-{name}.png"
        (self.folder / filename).write_bytes(png)
        return img(png, alt, f' data-file="{filename}"')


def _bounds(constraints: list[str]) -> dict[str, float]:
    """Upper bounds per metric, drawn as budget lines (constraints are stored as 'metric <= bound')."""
    parsed = [ConstraintSpec.model_validate(text) for text in constraints]
    return {c.metric: c.bound for c in parsed if c.op == "<="}


def _rq1(group: GroupResult, results: list[MetricEffects], figure: Future[bytes] | None, images: _Images) -> str:
    if not results or figure is None:
        return f"<h3>{escape(group.dataset)} × {escape(group.model)}</h3><p class=muted>Too few finished trials.</p>"
    params = sorted({p for r in results for p in r.importance})
    rows = [
        [
            r.metric,
            r.n_trials,
            f"{r.spread_rel:.0%}",
            *[r.importance.get(p, float("nan")) for p in params],
            r.ranking[0] if r.ranking and r.spread_rel > 0 else "—",
        ]
        for r in results
    ]
    headers = ["metric", "trials", "range / median", *[f"importance of {p}" for p in params], "most important"]
    effects_table = table(headers, rows)
    grid = images.tag(
        figure.result(), f"effects-{group.dataset}-{group.model}", f"effects {group.dataset} {group.model}"
    )
    return f"<h3>{escape(group.dataset)} × {escape(group.model)}</h3>{effects_table}{grid}"


def _predictors(study: StudyResult) -> str:
    rows = [
        [g.dataset, g.model, metric, e["n_train"], e["cv_mae"], e["cv_rel_error"]]
        for g in study.groups
        for metric, e in g.predictors.items()
    ]
    if not rows:
        return ""
    return (
        "<h3>Learned predictor</h3><p class=muted>Cross-validated error of the final-value predictors used by "
        "policy <code>predicted</code>, on the trials they were fitted on.</p>"
        + table(["dataset", "model", "metric", "trials fitted", "MAE", "relative error"], rows)
    )


def _rq2(out: Path) -> str:
    path = out / "savings.json"
    if not path.is_file():
        return (
            "<p class=muted>No savings comparison for this study yet: run <code>perftune savings SPEC</code> to "
            "compare it with the full search.</p>"
        )
    report = SavingsReport.from_dict(json.loads(path.read_text()))
    return (
        f"<p>Policy <b>{escape(report.policy)}</b> against the full search in <code>{escape(report.full_run)}</code>: "
        f"{escape(report.headline())}.</p>" + table(list(COLUMNS), [g.row() for g in report.groups])
    )


def build_report(out: Path | str, evaluator: str = "fanova") -> Path:
    """Write ``<out>/report/index.html`` (and its PNGs) for the study in ``out``; return the page's path."""
    out = Path(out)
    study = load_study(out)
    histories = load_histories(out)
    folder = out / "report"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    images = _Images(folder)
    keys = [(g, f"{g.dataset}/{g.model}") for g in study.groups]
    cache_path = folder / "effects-cache.json"
    effects, digests = _cached_effects(study, cache_path, evaluator)
    stale = {key: g.trials for g, key in keys if key not in effects}
    if stale:
        preload(evaluator)  # once here, not once in every forked worker
    # The importance fits and the figures are independent: they share the cores (forked processes).
    with local_pool() as pool:
        bounds = _bounds(study.constraints)
        figures = {
            "curves": {key: pool.submit(plots.learning_curves, g, histories, bounds) for g, key in keys},
            "pareto": {key: pool.submit(plots.pareto, g) for g, key in keys},
        }
        if stale:
            effects.update(analyze_groups(stale, evaluator=evaluator, pool=pool))
        cache_path.write_text(
            json.dumps({key: {"digest": d, "effects": [asdict(r) for r in effects[key]]} for key, d in digests.items()})
        )
        figures["effects"] = {
            key: pool.submit(
                plots.effects_grid,
                effects[key],
                f"{g.dataset} × {g.model}: how each hyperparameter moves each metric (median, relative)",
            )
            for g, key in keys
            if effects[key]
        }
        # Writing the numbers (MLflow's store opens in about a second) goes on while the figures are drawn.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="perftune-report") as writer:
            recording = writer.submit(_record_effects, study, effects)
            page = _page(study, out, effects, figures, images)
            recording.result()  # a failed write fails the report
    index = folder / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def _cached_effects(
    study: StudyResult, cache_path: Path, evaluator: str
) -> tuple[dict[str, list[MetricEffects]], dict[str, str]]:
    """RQ1 effects kept in ``cache_path`` for the groups whose trials did not change (by key), and the digest of
    every group's trials. Optuna's fANOVA takes most of a first report's time, so the effects are kept with a
    digest of the trials they came from and reused while the digest holds."""
    try:
        cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    except ValueError:
        cache = {}  # a damaged cache is only a slower report
    digests = {f"{g.dataset}/{g.model}": effects_digest(g.trials, evaluator) for g in study.groups}
    effects = {}
    for key, digest in digests.items():
        hit = cache.get(key) if isinstance(cache, dict) else None
        if isinstance(hit, dict) and hit.get("digest") == digest:
            effects[key] = [MetricEffects.from_dict(raw) for raw in hit["effects"]]
    return effects, digests


def _page(
    study: StudyResult,
    out: Path,
    effects: dict[str, list[MetricEffects]],
    figures: dict[str, dict[str, Future[bytes]]],
    images: _Images,
) -> str:
    compute = study.compute()
    contention = contention_line(contention_totals(study.trials))
    spec_path = out / "spec.yaml"
    spec_text = spec_path.read_text() if spec_path.is_file() else "(spec not kept in this study folder)"
    cards = [g.dataset_card for g in study.groups]
    unique_cards = list({c.get("name"): c for c in cards if c}.values())
    best_rows = []
    for g in study.groups:
        best = g.best
        metric = g.objectives[0].metric
        best_rows.append(
            [
                g.dataset,
                g.model,
                len(g.trials),
                g.counts()["feasible"],
                f"{metric} = {fmt(best.metrics[metric])}" if best else "no feasible trial",
                json.dumps(best.params) if best else "",
                best.trial_id if best else "",
                (best.mlflow_run_id or "") if best else "",
            ]
        )

    def tags(kind: str, alt: str) -> str:
        return "".join(
            images.tag(
                figures[kind][f"{g.dataset}/{g.model}"].result(),
                f"{kind}-{g.dataset}-{g.model}",
                f"{alt} {g.dataset} {g.model}",
            )
            for g in study.groups
        )

    curves, fronts = tags("curves", "learning curves"), tags("pareto", "pareto")
    rq1 = "".join(
        _rq1(g, effects[f"{g.dataset}/{g.model}"], figures["effects"].get(f"{g.dataset}/{g.model}"), images)
        for g in study.groups
    )
    skipped = "".join(
        f"<li>{escape(s['dataset'])} × {escape(s['model'])}: {escape(s['reason'])}</li>" for s in study.skipped
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>perftune report: {escape(study.name)}</title>
<style>{CSS}</style></head><body>
<h1>perftune report: {escape(study.name)}</h1>
<section id="summary"><p class=muted>started {escape(study.started_at)} · policy {escape(study.policy)} ·
constraints {escape(", ".join(study.constraints) or "none")} · MLflow {escape(str(study.tracking.get("uri", "")))}
(study run {escape(str(study.tracking.get("parent_run_id", "")))})</p>
{
        table(
            ["trials", "CPU-s spent", "trial-s spent", "wall-s", "CPU-s saved (est.)", "full search CPU-s (est.)"],
            [
                [
                    len(study.trials),
                    compute["cpu_s"],
                    compute["trial_s"],
                    compute["wall_s"],
                    compute["saved_cpu_s_est"],
                    compute["counterfactual_cpu_s"],
                ]
            ],
        )
    }
{f"<p class=muted>{escape(contention)}</p>" if contention else ""}
{f"<p>Skipped:</p><ul>{skipped}</ul>" if skipped else ""}</section>
<section id="best"><h2>Best feasible trial per dataset × model</h2>
{table(["dataset", "model", "trials", "feasible", "objective", "params", "trial", "MLflow run"], best_rows)}</section>
<section id="datasets"><h2>Datasets</h2>
{
        table(
            ["name", "source", "task", "rows", "features", "target", "fingerprint (sha256)"],
            [
                [
                    c.get("name"),
                    c.get("source"),
                    c.get("task"),
                    c.get("rows"),
                    c.get("features"),
                    c.get("target"),
                    c.get("fingerprint"),
                ]
                for c in unique_cards
            ],
        )
    }</section>
<section id="rq1"><h2>RQ1 · How do hyperparameters affect system performance?</h2>
<p class=muted>Importance: Optuna's evaluator over finished trials (shares sum to 1, so read them with the
metric's range: a share of a metric that barely varies means little). Effects: the metric's median
and interquartile range at each value, over all other hyperparameters. Cumulative and end-of-trial metrics use
completed trials only.</p>{rq1}</section>
<section id="curves"><h2>Learning curves</h2><p class=muted>One line per trial; × marks where a trial was stopped;
dashed lines are budgets.</p>{curves}</section>
<section id="pareto"><h2>Pareto fronts</h2>{fronts}</section>
<section id="rq2"><h2>RQ2 · How much compute does early stopping save, at what cost?</h2>{_rq2(out)}
{_predictors(study)}</section>
<section id="spec"><h2>Spec</h2><pre>{escape(spec_text)}</pre></section>
</body></html>
"""


def _record_effects(study: StudyResult, effects: dict[str, list[MetricEffects]]) -> None:
    """RQ1 numbers to effects.json, summary.json and MLflow."""
    from perftune.track.mlflow_tracker import log_study_analysis

    payload = {key: [asdict(r) for r in results] for key, results in effects.items()}
    (study.out_dir / "effects.json").write_text(json.dumps(payload, indent=2, default=str))
    add_to_summary(
        study.out_dir, "effects", {key: {r.metric: r.importance for r in results} for key, results in effects.items()}
    )
    metrics = {
        f"rq1.{key.replace('/', '.')}.{r.metric}.{param}": share
        for key, results in effects.items()
        for r in results
        for param, share in r.importance.items()
    }
    log_study_analysis(study.tracking, metrics, {"effects.json": payload})
