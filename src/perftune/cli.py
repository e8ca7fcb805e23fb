"""The ``perftune`` command line: parse the arguments, call the library, render the result with Rich.

Logic lives in the library (every command is a function call away from Python). Three habits keep this thin
and fast:

* **Heavy modules are imported inside the command that uses them**, after its arguments (and, for ``tune``,
  the spec) are checked: a usage error answers before Ray, MLflow, scikit-learn or FastAPI load
  (``benchmarks/cli_latency.py`` measures it).
* **One error idiom.** Library code raises :class:`~perftune.errors.PerftuneError`; :class:`_Cli` prints it
  as one line ``error: …`` and exits with its ``exit_code``. Click's own usage errors (a bad option value) get
  the same one line. ``--debug`` (or ``PERFTUNE_DEBUG=1``) shows the traceback instead.
* **One settings object.** Where the workspace, the MLflow store and the scoring log are comes from
  :class:`~perftune.settings.Settings`: the command's options over ``PERFTUNE_*`` variables.

Exit codes: 0 done; 1 failed, or a check found a problem (``reproduce``: not reproduced); 2 usage error (bad
option, bad spec, unknown name); 130 interrupted (``tune --resume`` continues).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup
from typer.exceptions import TyperException

from perftune import __version__
from perftune.errors import PerftuneError
from perftune.settings import Settings

# Piped output (CI logs, `make demo | tee`) gets a wide fixed width instead of Rich's 80 columns.
console = Console(width=None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", 220)))
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else int(os.environ.get("COLUMNS", 220)))


def _error_line(message: str) -> None:
    err_console.print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


class _Cli(TyperGroup):
    """The root command: turns every expected error into one line and an exit code (see the module doc)."""

    def invoke(self, ctx: typer.Context) -> Any:
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # perftune reads small JSON artifacts
        try:
            return super().invoke(ctx)
        except PerftuneError as exc:
            if isinstance(ctx.obj, Settings) and ctx.obj.debug:
                raise
            _error_line(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except TyperException as exc:  # click's usage errors (bad option value, unknown command, missing argument)
            if exc.exit_code != 2 or type(exc).__name__ == "NoArgsIsHelpError":
                raise  # "no arguments" shows the help, as asked
            where = exc.ctx.command_path if getattr(exc, "ctx", None) else "perftune"
            _error_line(f"{exc.format_message()} (see: {where} --help)")
            raise typer.Exit(2) from None


app = typer.Typer(
    cls=_Cli,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Tune, track and compare models with system metrics as first-class objectives.",
)


def _settings(**given: Any) -> Settings:
    """This command's settings: its options over ``PERFTUNE_*`` variables (``None``: option not given)."""
    return Settings.load(**given)


def _version(value: bool) -> None:
    if value:
        console.print(f"perftune {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks (or PERFTUNE_DEBUG=1).")] = False,
) -> None:
    ctx.obj = Settings.load(debug=debug or None)


# ------------------------------------------------------------------------------------------------ studies

Workspace = Annotated[
    Path | None, typer.Option(help="Workspace folder (default $PERFTUNE_WORKSPACE or ./perftune-workspace).")
]


@app.command()
def tune(
    spec: Annotated[Path, typer.Argument(help="The study spec (YAML).")],
    out: Annotated[Path | None, typer.Option(help="Output folder (default <workspace>/runs/<study>).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the interrupted study in --out.")] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the study in --out and what was derived from it.")
    ] = False,
    address: Annotated[str | None, typer.Option(help="Join an existing Ray cluster, e.g. ray://head:10001.")] = None,
    workspace: Workspace = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option(help="MLflow store, e.g. postgresql://host:5432/db (default: the spec's, else SQLite)."),
    ] = None,
) -> None:
    """Run a study: tune every dataset × model under the spec's objectives and budgets."""
    from perftune.spec import load_spec

    loaded = load_spec(spec)
    if workspace is not None:
        loaded.workspace = str(workspace)
    if tracking_uri is not None:
        loaded.tracking.uri = tracking_uri
    from perftune.tuning.plan import make_plan

    make_plan(loaded)  # every spec error, before Ray and MLflow are imported

    from perftune.console import LiveProgress, compute_line, result_table
    from perftune.tuning.engine import run_study

    with LiveProgress(console, loaded.name or spec.stem) as progress:
        result = run_study(
            loaded,
            out=out,
            resume=resume,
            overwrite=overwrite,
            address=address,
            progress=progress,
            spec_path=str(spec),
        )
    console.print(result_table(result))
    for note in result.skipped:
        console.print(f"[yellow]skipped[/] {note['dataset']} × {note['model']}: {note['reason']}")
    console.print(compute_line(result))
    console.print(f"summary: {result.out_dir / 'summary.json'}")
    console.print(
        f"MLflow: mlflow ui --backend-store-uri {result.tracking['uri']}"
        f"  (parent run {result.tracking['parent_run_id']})"
    )


@app.command()
def datasets(
    all_: Annotated[bool, typer.Option("--all", help="Also list datasets that would be downloaded.")] = False,
) -> None:
    """List the datasets perftune can load, and from where."""
    from rich.table import Table

    from perftune.data import data_dir, list_datasets

    infos = list_datasets(everything=all_)
    table = Table(title=f"datasets (data dir: {data_dir()}; set PERFTUNE_DATA_DIR to change)", title_justify="left")
    for column in ("name", "source", "task", "rows", "features", "available", "location"):
        table.add_column(column, overflow="fold")
    for info in infos:
        table.add_row(
            info.name,
            info.source,
            info.task or "?",
            str(info.rows or "?"),
            str(info.features or "?"),
            info.available,
            info.location,
        )
    console.print(table)
    if not all_:
        console.print(
            "Also: any PMLB name (`--all` lists them; fetched on first use), and CSV/Parquet files "
            "via {path: data.csv, target: y} in a spec."
        )


@app.command()
def report(
    run: Annotated[Path, typer.Argument(help="A study's output folder (holds summary.json).")],
    evaluator: Annotated[str, typer.Option(help="Importance evaluator: fanova or ped_anova.")] = "fanova",
) -> None:
    """Write the study's HTML report (RQ1 effects, learning curves, Pareto, RQ2) to RUN/report/index.html."""
    from perftune.analysis.effects import check_evaluator
    from perftune.report.html import build_report

    check_evaluator(evaluator)
    console.print(f"report: {build_report(run, evaluator=evaluator)}")


@app.command()
def savings(
    spec: Annotated[Path, typer.Argument(help="The study spec (YAML) with an early-stopping policy.")],
    out: Annotated[
        Path | None, typer.Option(help="Output folder of the policy run (default <workspace>/runs/<study>).")
    ] = None,
    rerun: Annotated[bool, typer.Option("--rerun", help="Run both studies again even if matching runs exist.")] = False,
) -> None:
    """RQ2: run the spec with policy none and with its own policy; compare compute, regret and false stops."""
    from perftune.spec import load_spec

    loaded = load_spec(spec)
    from perftune.tuning.plan import make_plan

    make_plan(loaded)

    from perftune.analysis.savings import run_savings
    from perftune.console import LiveProgress, savings_table

    with LiveProgress(console, loaded.name or spec.stem) as progress:
        result = run_savings(loaded, out=out, spec_path=str(spec), progress=progress, rerun=rerun)
    console.print(savings_table(result))
    console.print(
        f"written to {Path(result.policy_run) / 'savings.json'} (and summary.json); "
        f"`perftune report {result.policy_run}` shows it"
    )


@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(help="A study's output folder.")],
    run_b: Annotated[Path, typer.Argument(help="Another study's output folder.")],
) -> None:
    """Two studies side by side: configuration, feasibility, compute, best results."""
    from perftune.analysis.compare import side_by_side
    from perftune.console import compare_tables
    from perftune.results import load_study

    console.print(*compare_tables(side_by_side(load_study(run_a), load_study(run_b))))


@app.command()
def register(
    run: Annotated[Path, typer.Argument(help="A finished study's output folder.")],
    name: Annotated[str, typer.Option(help="Registered model name.")],
    dataset: Annotated[str | None, typer.Option(help="The dataset whose best feasible trial to register.")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model family.")] = None,
    trial: Annotated[str | None, typer.Option(help="Register this trial instead of the best feasible one.")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Register even if the gate fails (tagged gate=failed).")
    ] = False,
    tracking_uri: Annotated[
        str | None, typer.Option(help="Register in this MLflow store (default: the study's).")
    ] = None,
) -> None:
    """Refit the best feasible trial, test it on held-out data, gate it, and register it as `challenger`."""
    from perftune.registry.catalog import ModelRegistry
    from perftune.registry.register import register as register_trial
    from perftune.registry.register import store_of

    _recover(ModelRegistry(store_of(run, tracking_uri))).close()
    result = register_trial(
        run, name, dataset=dataset, model=model, trial_id=trial, force=force, tracking_uri=tracking_uri
    )
    for check in result.gate:
        mark = "– " if not check.applies else "[green]✓[/] " if check.passed else "[red]✗[/] "
        console.print(mark + check.message())
    shown = ", ".join(f"{k}={v:.4g}" for k, v in result.test_metrics.items())
    console.print(
        escape(
            f"registered {result.name} version {result.version} (alias challenger) from trial "
            f"{result.trial.trial_id} [{result.trial.model} {result.trial.params}]"
        )
    )
    console.print(f"held-out test: {shown}")


# ------------------------------------------------------------------------------------------------ registry

TrackingUri = Annotated[
    str | None,
    typer.Option(
        help="MLflow store (default $PERFTUNE_TRACKING_URI, $MLFLOW_TRACKING_URI, else sqlite:///<workspace>/mlflow.db).",
    ),
]
Reason = Annotated[str, typer.Option("--reason", "-m", help="Why: kept in the audit log.")]


def _registry(tracking_uri: str | None, workspace: Path | None, recover: bool = False):  # -> ModelRegistry
    """The registry of the store; ``recover``: first settle what interrupted commands left there."""
    from perftune.registry.catalog import ModelRegistry

    registry = ModelRegistry(_settings(tracking_uri=tracking_uri, workspace=workspace).existing_tracking_uri())
    return _recover(registry) if recover else registry


def _recover(registry):  # -> ModelRegistry
    """Settle what interrupted register/promote/rollback/retrain commands left in the store; one line each."""
    from perftune.registry.recovery import recover

    for line in recover(registry):
        err_console.print(f"[yellow]recovered:[/] {escape(line)}", highlight=False, soft_wrap=True)
    return registry


def _move(tracking_uri: str | None, workspace: Path | None, name: str, action: Callable[[Any], Any], note: str = ""):
    """Run one alias move on the registry and print it (``name alias: vA → vB``)."""
    entry = action(_registry(tracking_uri, workspace, recover=True))
    console.print(f"{name} {entry.move()}{note}")


models_app = typer.Typer(help="Registered models: versions, aliases, key metrics; `show` one version.")
app.add_typer(models_app, name="models")


@models_app.callback(invoke_without_command=True)
def models_list(ctx: typer.Context, tracking_uri: TrackingUri = None, workspace: Workspace = None) -> None:
    """Registered models, their versions, aliases and the champion's held-out test metrics."""
    if ctx.invoked_subcommand is not None:
        return
    from perftune.console import models_table

    registry = _registry(tracking_uri, workspace, recover=True)
    console.print(models_table(registry.models(), registry.tracking_uri))


@models_app.command("show")
def models_show(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="Version number.")],
    tracking_uri: TrackingUri = None,
    workspace: Workspace = None,
) -> None:
    """One version: aliases, status, gate results, test metrics (ML + system) and lineage."""
    from perftune.console import version_tables

    console.print(*version_tables(_registry(tracking_uri, workspace).show(name, version)))


@app.command()
def promote(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="The version to make champion.")],
    reason: Reason = "",
    force: Annotated[bool, typer.Option("--force", help="Promote a version that failed its gate.")] = False,
    tracking_uri: TrackingUri = None,
    workspace: Workspace = None,
) -> None:
    """Point the `champion` alias at VERSION (the previous champion is remembered for rollback)."""
    _move(tracking_uri, workspace, name, lambda r: r.promote(name, version, reason=reason, force=force))


@app.command()
def rollback(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    reason: Reason = "",
    tracking_uri: TrackingUri = None,
    workspace: Workspace = None,
) -> None:
    """Point `champion` back at the previous champion."""
    _move(tracking_uri, workspace, name, lambda r: r.rollback(name, reason=reason), " (rolled back)")


@app.command()
def archive(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="The version to retire.")],
    reason: Reason = "",
    tracking_uri: TrackingUri = None,
    workspace: Workspace = None,
) -> None:
    """Retire a version: kept with its lineage for audit, but it loses its aliases and cannot be promoted or served."""
    _move(tracking_uri, workspace, name, lambda r: r.archive(name, version, reason=reason))


@app.command()
def history(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print every entry with its numbers as JSON lines.")] = False,
    tracking_uri: TrackingUri = None,
    workspace: Workspace = None,
) -> None:
    """The audit log of NAME: every alias move, retraining, comparison, promotion and rollback, with reasons."""
    entries = _registry(tracking_uri, workspace).history(name)
    if json_out:
        import json
        from datetime import timezone

        for e in entries:
            at = e.at.astimezone(timezone.utc) if e.at.tzinfo else e.at.replace(tzinfo=timezone.utc)  # SQLite: naive
            print(json.dumps({**e.__dict__, "at": at.isoformat()}, default=str))
        return
    from perftune.console import history_table

    console.print(history_table(name, entries))


def _retrainer(name: str, spec: Path | None, scoring_uri: str | None, tracking_uri: str | None,
               workspace: Path | None, json_out: bool = False):  # fmt: skip
    """A Retrainer printing each step as it is taken (``--json``: one JSON line per step)."""
    import json
    import os

    from perftune.retrain.loop import Retrainer
    from perftune.spec import load_spec

    def say(step) -> None:
        if json_out:
            print(json.dumps({"step": step.what, "message": step.message, **step.details}, default=str), flush=True)
        else:
            console.print(f"[bold]{step.what}[/]: {step.message}", highlight=False)

    given = _settings(scoring_uri=scoring_uri, tracking_uri=tracking_uri, workspace=workspace)
    explicit = workspace is not None or bool(os.environ.get("PERFTUNE_WORKSPACE"))
    retrainer = Retrainer(name, given.existing_tracking_uri(), given.scoring_uri_or_default(),
                          given.workspace if explicit else None, load_spec(spec) if spec else None, say)  # fmt: skip
    _recover(retrainer.registry)
    return retrainer


@app.command()
def retrain(
    name: Annotated[str, typer.Argument(help="Registered model name (its champion is retrained).")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be done (trigger, data, search); change nothing.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Retrain now whatever the triggers say (on demand).")] = False,
    spec: Annotated[
        Path | None, typer.Option(help="A spec whose retrain:, constraints and search replace the original study's.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON line per step.")] = False,
    scoring_uri: ScoringUri = None,
    tracking_uri: TrackingUri = None,
    workspace: Workspace = None,
) -> None:
    """Run the retrain policy now: check the champion, and when a trigger fires retrain under the original budgets,
    register the challenger, compare both on the same data and promote or keep it. Prints each decision and why.
    """
    retrainer = _retrainer(name, spec, scoring_uri, tracking_uri, workspace, json_out)
    try:
        retrainer.run(force=force, dry_run=dry_run)
    finally:
        retrainer.close()


@app.command()
def reproduce(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="Version number.")],
    tracking_uri: TrackingUri = None,
    workspace: Annotated[
        Path | None, typer.Option(help="Read store: datasets from this workspace instead of the registered one.")
    ] = None,
) -> None:
    """Refit a version from its lineage alone and compare its test metrics (exit 1 when they differ)."""
    from perftune.console import reproduction_table
    from perftune.registry.reproduce import reproduce as reproduce_version

    registry = _registry(tracking_uri, workspace)
    rep = reproduce_version(registry, name, version, str(workspace.resolve()) if workspace else None)
    console.print(reproduction_table(rep))
    if rep.data_matches:
        console.print(f"data: identical (sha256 {rep.fingerprint_now[:16]}…)")
    else:
        console.print(
            f"[red]data changed[/]: registered sha256 {rep.fingerprint_registered[:16]}…, "
            f"now {rep.fingerprint_now[:16]}…"
        )
    for key, (before, now) in rep.environment_changes.items():
        console.print(f"environment: {key} was {before}, now {now}")
    if rep.matches:
        console.print(f"[green]reproduced[/]: {name} v{version} gives identical ML metrics and model size")
    else:
        console.print(f"[red]not reproduced[/]: {name} v{version} differs (see above)")
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------------------ serving

ScoringUri = Annotated[
    str | None,
    typer.Option(help="Scoring log database (default $PERFTUNE_SCORING_URI, else sqlite:///<workspace>/scoring.db)."),
]


@app.command()
def serve(
    reference: Annotated[str, typer.Argument(help="NAME@ALIAS (followed: hot swap on promote) or NAME/VERSION.")],
    host: Annotated[str, typer.Option(help="Interface to bind (0.0.0.0 for all).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (1–65535).")] = 8080,
    workers: Annotated[int, typer.Option(help="Server processes.")] = 1,
    threads: Annotated[
        int | None,
        typer.Option(help="Threads of each worker's BLAS, torch, onnxruntime (default: as the version was measured)."),
    ] = None,
    token_file: Annotated[
        Path | None, typer.Option(help="Bearer token (≥ 16 chars) required on inference, feedback, management.")
    ] = None,
    protect_health: Annotated[bool, typer.Option("--protect-health", help="Require the token on health too.")] = False,
    protect_metrics: Annotated[
        bool, typer.Option("--protect-metrics", help="Require the token on /metrics too.")
    ] = False,
    scoring_uri: ScoringUri = None,
    no_scoring_log: Annotated[bool, typer.Option("--no-scoring-log", help="Do not log requests.")] = False,
    scoring_durability: Annotated[
        str,
        typer.Option(
            help="memory: rows queued in memory (SIGTERM drains; SIGKILL loses the queue). local: each row written"
            " through to a local file before the response (SIGKILL loses nothing answered).",
        ),
    ] = "memory",
    max_body_mb: Annotated[float, typer.Option(help="Largest request body accepted (413 beyond); > 0.")] = 10.0,
    poll_interval: Annotated[float, typer.Option(help="Seconds between alias checks (0: never).")] = 2.0,
    log_level: Annotated[str, typer.Option(help="Server log level.")] = "info",
    tracking_uri: TrackingUri = None,
    workspace: Workspace = None,
) -> None:
    """Serve a registered version over REST (Open Inference Protocol v2 and MLflow /invocations)."""
    import math

    from perftune.serve.settings import ServeSettings

    settings = _settings(tracking_uri=tracking_uri, workspace=workspace, scoring_uri=scoring_uri)
    serve_settings = ServeSettings.build(  # every option is checked here, before anything loads
        reference=reference,
        host=host,
        port=port,
        workers=workers,
        threads=threads,
        log_level=log_level.lower(),
        scoring_durability=scoring_durability.lower(),
        token_file=str(token_file) if token_file else None,
        protect_health=protect_health,
        protect_metrics=protect_metrics,
        max_body_bytes=int(max_body_mb * 2**20) if math.isfinite(max_body_mb) else max_body_mb,
        poll_interval_s=poll_interval,
        tracking_uri="-",  # filled in below, once the options are known to be right
        scoring_uri=None,
    )
    serve_settings.token()  # a missing or short token file is an error now, not after loading
    serve_settings = serve_settings.model_copy(
        update={
            "tracking_uri": settings.existing_tracking_uri(),
            "scoring_uri": None if no_scoring_log else settings.scoring_uri_or_default(),
            "workspace": str(settings.workspace.resolve()),
        }
    )
    from perftune.serve.run import run_server

    run_server(serve_settings, announce=lambda line: console.print(line, highlight=False))


@app.command()
def feedback(
    file: Annotated[Path, typer.Argument(help="CSV or JSON lines with request_id and label columns.")],
    model: Annotated[str, typer.Option(help="Registered model name the requests went to.")],
    scoring_uri: ScoringUri = None,
    workspace: Workspace = None,
) -> None:
    """Attach ground-truth labels to logged requests (rows of one request in order)."""
    from perftune.serve.feedback import attach_labels, read_labels

    items = read_labels(file)
    from perftune.serve.scoring import scoring_engine

    uri = _settings(scoring_uri=scoring_uri, workspace=workspace).scoring_uri_or_default()
    result = attach_labels(scoring_engine(uri), model, items)
    unknown = result.unknown
    console.print(
        f"labels stored for {result.stored} requests"
        + (f" ({result.replaced} replaced earlier labels)" if result.replaced else "")
        + (f"; unknown request ids: {len(unknown)}" if unknown else "")
    )
    if unknown:
        console.print("  " + ", ".join(unknown[:10]) + (" …" if len(unknown) > 10 else ""), highlight=False)
        if not result.stored:
            console.print(f"  none of them was logged for model {model!r} in {uri}: check --model and --scoring-uri",
                          highlight=False)  # fmt: skip
        raise typer.Exit(1)


@app.command()
def monitor(
    reference: Annotated[str, typer.Argument(help="NAME@ALIAS or NAME/VERSION.")],
    window: Annotated[
        str | None, typer.Option(help="Rows (10000) or a duration (30m, 1h, 2d); default: the version's setting.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the check as JSON (for pipelines).")] = False,
    html: Annotated[
        Path | None, typer.Option(help="Write a self-contained HTML page of the check and history.")
    ] = None,
    watch: Annotated[str | None, typer.Option(help="Check every interval (60s, 5m) until stopped.")] = None,
    metrics_port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="With --watch: serve Prometheus gauges on this port.")
    ] = None,
    server: Annotated[
        str | None, typer.Option(help="URL of the running perftune serve (its /metrics give the error rate).")
    ] = None,
    spec: Annotated[
        Path | None,
        typer.Option(help="A spec whose monitor: (and, with --retrain, retrain:) section replaces the stored one."),
    ] = None,
    retrain: Annotated[
        bool,
        typer.Option(
            "--retrain",
            help="Act on each check of NAME@champion: roll a degraded champion on probation back, retrain and "
            "promote when the retrain policy says so.",
        ),
    ] = False,
    scoring_uri: ScoringUri = None,
    tracking_uri: TrackingUri = None,
    workspace: Workspace = None,
) -> None:
    """Check a served version: drift, performance (estimated and with labels), service metrics, baselines.

    Exit code 0 when healthy, 1 when the check found drift, degradation, a broken budget or an anomaly
    (with --retrain: 0 when the loop acted on it — retrained, promoted or rolled back).
    """
    from perftune.errors import UsageError
    from perftune.spec import load_spec, parse_window

    for option, value in (("--window", window), ("--watch", watch)):
        try:
            kind = parse_window(value)[0] if value is not None else None
        except ValueError as exc:
            raise UsageError(f"{option}: {exc}") from None
        if option == "--watch" and kind == "rows":
            raise UsageError(f"--watch {value}: give an interval with a unit (60s, 5m, 1h)")
    if metrics_port is not None and watch is None:
        raise UsageError("--metrics-port serves gauges while watching; add --watch INTERVAL")
    if retrain and not reference.endswith("@champion"):
        raise UsageError(f"--retrain acts on a model's champion; monitor {reference.split('@')[0].split('/')[0]}"
                         "@champion")  # fmt: skip
    settings = load_spec(spec).monitor if spec is not None else None
    from perftune.monitor.check import Monitor
    from perftune.monitor.render import print_check, summary_line, to_json

    given = _settings(scoring_uri=scoring_uri, tracking_uri=tracking_uri, workspace=workspace)
    checker = Monitor(reference, given.existing_tracking_uri(), given.scoring_uri_or_default(), settings, server)
    acted: list[bool] = []
    loop = (
        _retrainer(reference.split("@")[0], spec, scoring_uri, tracking_uri, workspace, json_out) if retrain else None
    )

    def act(result) -> None:
        """--retrain: probation first (a degraded new champion goes back), then the retrain policy."""
        from perftune.retrain.probation import judge as probation

        assert loop is not None
        champion = loop.champion()
        policy = loop.spec_for(champion).retrain
        step = probation(loop.registry, result, policy.probation, checker.engine)
        if step is not None:
            loop.say(step)
            acted.append(step.what == "rollback")
            if step.what == "rollback":
                return
        outcome = loop.run(check=result)
        acted.append(outcome.challenger is not None)

    def show(result) -> None:
        if json_out:
            print(to_json(result, indent=2 if watch is None else None), flush=True)  # --watch: one JSON line per check
        elif watch is not None:
            console.print(summary_line(result), highlight=False)
        else:
            print_check(console, result)
        if html is not None:
            from perftune.monitor.html import write_page

            write_page(checker, result, html)
        if loop is not None:
            act(result)

    try:
        if watch is not None:
            from perftune.monitor.watch import watch as watch_loop

            watch_loop(checker, parse_window(watch)[1], window, show, metrics_port)
            return
        result = checker.check(window)
        show(result)
        if html is not None and not json_out:
            console.print(f"page: {html}")
    finally:
        checker.close()
        if loop is not None:
            loop.close()
    if not result.healthy and not any(acted):
        raise typer.Exit(1)


@app.command()
def explain(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="Version number.")],
    rows: Annotated[int, typer.Option(min=1, max=10_000, help="Attribute the latest N scored rows.")] = 5,
    json_out: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
    html: Annotated[Path | None, typer.Option(help="Also write a self-contained HTML page.")] = None,
    scoring_uri: ScoringUri = None,
    tracking_uri: TrackingUri = None,
    workspace: Workspace = None,
) -> None:
    """A version's global importance (test split) and per-row attributions of its latest scored rows."""
    import json

    from perftune.explain.version import explain_version

    given = _settings(scoring_uri=scoring_uri, tracking_uri=tracking_uri, workspace=workspace)
    registry = _registry(tracking_uri, workspace)
    try:
        found = explain_version(registry, given.scoring_uri_or_default(), name, version, rows)
    finally:
        registry.close()
    if html is not None:
        from perftune.explain.html import write_page

        write_page(found, html)
    if json_out:
        document = {
            "name": found.name, "version": found.version,
            "importance": [f.__dict__ for f in found.importance], "method": found.method.description,
            "attributions": found.attributions.to_dict() if found.attributions else None, "rows": found.rows_note,
        }  # fmt: skip
        print(json.dumps(document, indent=2))
        return
    from rich.table import Table

    shown = found.shown_importance
    more = f", the strongest {len(shown)} of {len(found.importance)}" if len(shown) < len(found.importance) else ""
    table = Table(title=f"{found.name} v{found.version}: {found.method.description}{more}", title_justify="left")
    for header in ("feature", found.method.measure, "± std"):
        table.add_column(header, justify="left" if header == "feature" else "right")
    for f in shown:
        table.add_row(escape(f.feature), f"{f.mean:.4f}", f"{f.std:.4f}")
    console.print(table)
    a = found.attributions
    if a is None:
        console.print(f"attributions: {found.rows_note}")
        return
    if found.inputs != "table":  # hundreds of terms or pixels a row: its strongest ones
        table = Table(title=f"attributions of {found.rows_note} ({a.method})", title_justify="left")
        for header in ("row", "explained", "base", "output", "strongest features"):
            table.add_column(header, justify="left" if header in ("explained", "strongest features") else "right")
        for i in range(len(a.output)):
            strongest = ", ".join(f"{name} {value:+.3f}" for name, value in found.strongest(i))
            table.add_row(str(i), escape(a.explained[i]), f"{a.base_value[i]:.3f}", f"{a.output[i]:.3f}",
                          escape(strongest))  # fmt: skip
        console.print(table)
        return
    table = Table(title=f"attributions of {found.rows_note} ({a.explained[0]})", title_justify="left")
    for header in ("row", "base", *a.feature_names, "= output"):
        table.add_column(escape(header), justify="right")
    for i in range(len(a.output)):
        table.add_row(str(i), f"{a.base_value[i]:.3f}", *(f"{v:+.3f}" for v in a.values[i]), f"{a.output[i]:.3f}")
    console.print(table)


@app.command()
def profile(
    reference: Annotated[str, typer.Argument(help="NAME@ALIAS or NAME/VERSION.")],
    tracking_uri: TrackingUri = None,
    workspace: Workspace = None,
) -> None:
    """(Re)build a version's reference profile for monitoring from its refit recipe and store it with the version."""
    from perftune.monitor.reference import profile_from_recipe

    registry = _registry(tracking_uri, workspace)
    try:
        version = registry.resolve(reference)
        built = profile_from_recipe(registry.client, version)
    finally:
        registry.close()
    kinds = [c.kind for c in built.columns]
    console.print(
        f"profile of {version.name} v{version.version}: {built.rows} training rows, {kinds.count('numeric')} numeric "
        f"and {kinds.count('categorical')} categorical columns"
        + (", CBPE calibration" if built.calibration else ", no probabilities (performance not estimable)"),
        highlight=False,
    )


scoring_app = typer.Typer(no_args_is_help=True, help="The scoring log: replay rows the database did not take.")
app.add_typer(scoring_app, name="scoring")


@scoring_app.command("replay")
def scoring_replay(
    scoring_uri: ScoringUri = None,
    workspace: Workspace = None,
) -> None:
    """Write the dead-letter file and durable logs left by stopped servers into the scoring database (idempotent)."""
    from perftune.serve.scoring import replay_command

    settings = _settings(scoring_uri=scoring_uri, workspace=workspace)
    console.print(replay_command(settings.scoring_uri_or_default(), settings.workspace.resolve()), highlight=False)


@app.command()
def deploy(
    reference: Annotated[str, typer.Argument(help="NAME@ALIAS or NAME/VERSION.")],
    out: Annotated[Path, typer.Option(help="Folder for the Dockerfile and manifests.")] = Path("deploy"),
    target: Annotated[str, typer.Option(help="Deployment target (k8s).")] = "k8s",
    target_rps: Annotated[float, typer.Option(help="Single-row requests per second to plan for.")] = 100.0,
    image: Annotated[str, typer.Option(help="Container image of the server.")] = "perftune-serve:latest",
    port: Annotated[int, typer.Option(help="Container port (1–65535).")] = 8080,
    token_secret: Annotated[
        str | None, typer.Option(help="Kubernetes Secret holding the bearer token (key: token).")
    ] = None,
    monitor_every: Annotated[
        str | None,
        typer.Option(help="Add a CronJob running `perftune monitor` this often (5m, 1h); needs Secret <app>-scoring."),
    ] = None,
    tracking_uri: TrackingUri = None,
    workspace: Workspace = None,
) -> None:
    """Write a Dockerfile and Kubernetes manifests sized from the version's measured latency and memory."""
    from perftune.serve.deploy import check_deploy_options, cron_schedule, sizing_from_tags, write_deploy

    check_deploy_options(target, target_rps, port, out)
    if monitor_every is not None:
        cron_schedule(monitor_every)  # a bad interval is a usage error before the registry is opened
    version = _registry(tracking_uri, workspace).servable(reference)  # archived versions are refused
    sizing = sizing_from_tags(version.name, str(version.version), version.tags, target_rps)
    written = write_deploy(out, sizing, reference, image, port, token_secret, monitor_every)
    console.print(sizing.explanation(), highlight=False)
    console.print("wrote " + ", ".join(str(p) for p in written), highlight=False)


# ------------------------------------------------------------------------------------------------ data store

data_app = typer.Typer(no_args_is_help=True, help="The versioned ML data store in the workspace.")
app.add_typer(data_app, name="data")


@data_app.command("ingest")
def data_ingest(
    path: Annotated[Path, typer.Argument(help="A CSV, TSV or Parquet file.")],
    name: Annotated[str, typer.Option(help="Dataset name in the store (specs use store:NAME).")],
    target: Annotated[str, typer.Option(help="The label column.")],
    missing: Annotated[str, typer.Option(help="Rows with missing values: reject or drop_rows.")] = "reject",
    duplicates: Annotated[str, typer.Option(help="Duplicate rows: drop, keep or reject.")] = "drop",
    constant_columns: Annotated[str, typer.Option(help="Constant feature columns: drop or keep.")] = "drop",
    non_numeric: Annotated[str, typer.Option(help="Non-numeric feature columns: reject or drop.")] = "reject",
    workspace: Workspace = None,
) -> None:
    """Validate, clean and store a table as a content-addressed version (same content → same version)."""
    from perftune.data.store import DataStore, cleaning_rules

    rules = cleaning_rules(
        missing=missing, duplicates=duplicates, constant_columns=constant_columns, non_numeric=non_numeric
    )
    stored = DataStore(_settings(workspace=workspace).workspace).ingest(path, name, target, rules)
    report = stored.report
    console.print(
        f"{'unchanged' if stored.reused else 'stored'}: store:{stored.name}@{stored.version} "
        f"({stored.rows} rows, {stored.features} features, {stored.task})"
    )
    console.print(
        f"validation: {report['rows']} rows read; missing {report['missing'] or 'none'}; "
        f"{report['duplicate_rows']} duplicate rows; constant columns {report['constant_columns'] or 'none'}; "
        f"non-numeric {report['non_numeric_columns'] or 'none'}"
    )
    for action in report["actions"]:
        console.print(f"  cleaned: {action}")


def _print_ingest(stored: Any) -> None:
    counts = stored.report.get("counts", {})
    console.print(
        f"{'unchanged' if stored.reused else 'stored'}: store:{stored.name}@{stored.version} "
        f"({stored.rows} {'texts' if stored.kind == 'text' else stored.kind}, labels "
        f"{', '.join(map(str, stored.meta.get('classes', []))) or 'none'})"
    )
    console.print("files: " + (", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "none"))
    files = stored.report.get("files", [])
    flagged = [e for status in ("repaired", "rejected") for e in files if e["status"] == status and e["reason"]]
    for entry in flagged[:10]:
        console.print(f"  {entry['status']}: {entry['file']}: {entry['reason']}", highlight=False)
    if len(flagged) > 10:
        console.print(f"  … and {len(flagged) - 10} more (every file's outcome is in the version's report)")
    for line in stored.report.get("actions", []) + stored.report.get("notes", []):
        console.print(f"  {line}", highlight=False)


@data_app.command("ingest-text")
def data_ingest_text(
    path: Annotated[str, typer.Argument(help="A zip or folder of text files (or 'bbc': the offline copy / download).")],
    name: Annotated[str, typer.Option(help="Dataset name in the store (specs use store:NAME).")],
    labels_from: Annotated[str, typer.Option(help="folders (each file's folder is its label) or none.")] = "folders",
    invalid_utf8: Annotated[str, typer.Option(help="A file that is not UTF-8: replace, latin1 or reject.")] = "replace",
    min_chars: Annotated[int, typer.Option(help="Files with fewer characters are rejected.")] = 20,
    extensions: Annotated[str, typer.Option(help="Comma-separated file types to read.")] = ".txt",
    duplicates: Annotated[str, typer.Option(help="Files with the same text: drop or keep.")] = "drop",
    test_fraction: Annotated[float, typer.Option(help="Held-out test share of each label.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the train/test split.")] = 0,
    workspace: Workspace = None,
) -> None:
    """Check every text file (encoding, length, type), label it, split it, and store a new version."""
    from perftune.data.store import DataStore, rules_from_options
    from perftune.data.unstructured import TextRules, ingest_text
    from perftune.errors import UsageError

    rules = rules_from_options(
        TextRules,
        invalid_utf8=invalid_utf8,
        min_chars=min_chars,
        extensions=tuple(
            e.strip().lower() if e.strip().startswith(".") else f".{e.strip().lower()}" for e in extensions.split(",")
        ),
        duplicates=duplicates,
    )
    if labels_from not in ("folders", "none"):
        raise UsageError(f"--labels-from must be folders or none, not {labels_from!r}")
    store = DataStore(_settings(workspace=workspace).workspace)
    _print_ingest(ingest_text(store, path, name, rules, labels_from, test_fraction, seed))  # type: ignore[arg-type]


@data_app.command("ingest-images")
def data_ingest_images(
    path: Annotated[
        str, typer.Argument(help="A folder of idx files (or 'fashion-mnist': the offline copy / download).")
    ],
    name: Annotated[str, typer.Option(help="Dataset name in the store (specs use store:NAME).")],
    classes: Annotated[int | None, typer.Option(help="Labels must lie in 0 … classes-1.")] = None,
    test_fraction: Annotated[float, typer.Option(help="Test share when the files come unsplit.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of a drawn split.")] = 0,
    workspace: Workspace = None,
) -> None:
    """Check idx image and label files (magic, shape, dtype, label range) and store a new version."""
    from perftune.data.store import DataStore
    from perftune.data.unstructured import ingest_images

    store = DataStore(_settings(workspace=workspace).workspace)
    _print_ingest(ingest_images(store, path, name, classes, test_fraction, seed))


@data_app.command("ingest-labels")
def data_ingest_labels(
    export: Annotated[Path, typer.Argument(help="A Label Studio JSON export (choices).")],
    name: Annotated[str, typer.Option(help="The text dataset in the store to label.")],
    test_fraction: Annotated[float, typer.Option(help="Held-out test share of each label.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the train/test split.")] = 0,
    workspace: Workspace = None,
) -> None:
    """A new version of a text dataset with labels (and annotator, time) from a Label Studio export."""
    from perftune.data.store import DataStore
    from perftune.data.unstructured import ingest_labels

    store = DataStore(_settings(workspace=workspace).workspace)
    _print_ingest(ingest_labels(store, export, name, test_fraction, seed))


@data_app.command("list")
def data_list(
    name: Annotated[str | None, typer.Argument(help="Only this dataset's versions.")] = None,
    workspace: Workspace = None,
) -> None:
    """Versions in the data store."""
    from rich.table import Table

    from perftune.data.store import DataStore

    store = DataStore(_settings(workspace=workspace).workspace)
    table = Table(title=f"data store: {store.root}", title_justify="left")
    table.add_column("dataset", no_wrap=True)
    table.add_column("version", no_wrap=True)
    for column in ("created", "kind", "rows", "features", "task", "target", "source"):
        table.add_column(column, overflow="fold")
    for v in store.versions(name):
        table.add_row(
            f"store:{v.name}", v.version, v.created_at, v.kind, str(v.rows), str(v.features), v.task, v.target,
            v.source,
        )  # fmt: skip
    console.print(table)


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # no "creating tables" chatter on a new store
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("[red]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
