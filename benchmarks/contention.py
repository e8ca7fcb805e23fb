"""Do perftune's decisions hold on a busy machine? Quiet and loaded, before and after. (Prints a table.)

Each decision is made quiet and beside ``busy 2`` (two busy processes), alternately in one run, for one or more
checkouts side by side; printed: what each condition decided, how often the decisions agree, the target, and the
load each phase met. No assertions.

Decisions (``--only`` picks some), each from real ``perftune`` commands in a fresh temporary workspace:

* ``quick`` — ``perftune tune examples/quick.yaml``, quiet and loaded in turn (Q, L, Q, L, …): the share of trials,
  matched by dataset × model × params, that end the same way (completed / stopped by budget) quiet and loaded
  (mean over every quiet × loaded pair of runs; beside it quiet × quiet, the floor a shared machine allows) —
  target ≥ 95 %; and whether every dataset × model group has the same best feasible configuration in every run.
* ``fashion`` — ``examples/fashion_mnist.yaml`` (same families, space, scheduler and budgets) on a stratified
  sample of the images, its ``train_time_s`` bound scaled by sample ÷ 30000 (the example's sample) so that the
  budget binds as in the example: is a feasible ``torch_cnn`` found under load.
* ``gate`` — the demo's ``perftune register RUN --name … --dataset diabetes`` (quick.yaml's gate, latency
  included) repeated quiet and loaded on one quiet study: the same verdict every time (target 5 of 5 loaded, equal
  to quiet), with the p95 it judged and, where the code measures one, its 95 % interval.
* ``runtime`` — ``examples/bbc_news.yaml`` on a sample of the articles, its space cut to one configuration
  uncompressed and int8 (the decisions here are registration's and serving's, not the search's): ``perftune
  register --trial <uncompressed> --force`` repeated; the runtime it chooses (tag ``perftune.runtime``: torch or
  onnxruntime) the same every time.
* ``serve`` — ``perftune serve`` of the int8 version (``--threads`` passed when that code's serve has it), single-row
  ``/invocations`` requests from one keep-alive client on 127.0.0.1 in alternating quiet and loaded rounds: loaded
  p95 ÷ quiet p95 — target ≤ 3.

``--code LABEL=SRC`` (repeatable) runs every decision against each checkout: its commands run with
``PYTHONPATH=SRC`` and this venv's ``perftune`` (``sys.executable``'s folder), codes interleaved within every
repetition so that they meet the same background. Set-up (ingesting data, the studies that ``gate``, ``runtime``
and ``serve`` start from) runs quiet and is not part of any phase.

The load is printed, not assumed: for each decision × code × condition, the mean 1-minute load average over its
phases and the share of the machine's CPU used by processes this benchmark did not start (``/proc/stat``'s busy
time minus the CPU of this process and its descendants, busy's burners included; a process that escapes the tree
counts as "other", so the figure is an upper bound). On a shared machine "quiet" is only quieter.

Every process the benchmark starts (commands, servers, busy) is ended by its pid, with its descendants, on any
exit, Ctrl-C included; busy is also bounded by its own time limit.

Usage: ``python benchmarks/contention.py [--code before=../wt-before/src --code after=src] [--quick]
[--only quick gate …]`` (``make bench-contention``; PERFTUNE_DATA_DIR must point at the datasets).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import combinations, product
from pathlib import Path
from typing import Any

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FASHION_SAMPLE = 30000  # the example's sample; its train_time_s bound is scaled from it
BBC_CONFIG = {"batch_size": 64, "learning_rate": 0.003, "hidden_units": 256, "dropout": 0.2}


class Condition(StrEnum):
    QUIET = "quiet"
    LOADED = "loaded"


@dataclass(frozen=True)
class Sizes:
    """Repetitions and samples of one run (full or ``--quick``)."""

    quick_runs: int  # quick.yaml studies per condition
    fashion_sample: int
    gate_quiet: int
    gate_loaded: int
    bbc_sample: int
    runtime_quiet: int
    runtime_loaded: int
    serve_rounds: int  # per condition
    serve_requests: int  # per round


FULL = Sizes(2, 6000, 2, 5, 800, 2, 5, 3, 1000)
QUICK = Sizes(1, 2000, 1, 2, 300, 1, 2, 1, 300)


def alternate(quiet: int, loaded: int) -> list[Condition]:
    """Q, L, Q, L, … and then the rest of the more numerous condition."""
    order = []
    for i in range(max(quiet, loaded)):
        order += [Condition.QUIET] * (i < quiet) + [Condition.LOADED] * (i < loaded)
    return order


# ------------------------------------------------------------------------------------------- processes


class Processes:
    """The processes this benchmark started; each is ended by its pid together with its descendants."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.live: list[subprocess.Popen] = []
        self._count = 0

    def start(self, command: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Path]:
        self._count += 1
        log = self.logs / f"{self._count:03d}-{Path(command[1] if len(command) > 1 else command[0]).name}.log"
        with log.open("w") as out:  # a file, not a pipe: a server's log never fills a pipe and stalls it
            out.write(" ".join(command) + "\n")
            out.flush()
            process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.live.append(process)
        return process, log

    def stop(self, process: subprocess.Popen, grace_s: float = 30) -> None:
        """SIGTERM to the process (a server drains, busy stops its burners), then its leftovers by pid."""
        try:
            tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
        except psutil.Error:
            tree = []
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        left = [p for p in tree[1:] if p.is_running()]
        for p in left:
            with contextlib.suppress(psutil.Error):
                p.terminate()
        for p in psutil.wait_procs(left, timeout=5)[1]:
            with contextlib.suppress(psutil.Error):
                p.kill()
        if process in self.live:
            self.live.remove(process)

    def stop_all(self) -> None:
        for process in reversed(list(self.live)):
            self.stop(process, grace_s=10)


# ------------------------------------------------------------------------------------------- load


@dataclass
class PhaseLoad:
    seconds: float
    load1: float  # mean 1-minute load average
    others: float  # share of the machine's CPU used by processes this benchmark did not start (upper bound)


def _tree() -> dict[tuple[int, float], tuple[float, float, bool]]:
    """This process's descendants: (pid, start) → (own CPU s, own + reaped children's CPU s, direct child)."""
    me = psutil.Process()
    out = {}
    for p in me.children(recursive=True):
        with contextlib.suppress(psutil.Error), p.oneshot():
            t = p.cpu_times()
            out[(p.pid, p.create_time())] = (
                t.user + t.system,
                t.user + t.system + t.children_user + t.children_system,
                p.ppid() == me.pid,
            )
    return out


def _machine() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine."""
    t = psutil.cpu_times()
    busy = t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)
    return busy, busy + t.idle + getattr(t, "iowait", 0.0)


class LoadMeter:
    """The load of one phase; a thread samples the load average and this process tree's CPU every second.

    This tree's CPU is the larger of two lower bounds: (a) exact accounting of processes reaped by this process or
    alive at the end (``os.times`` children + live processes' own and reaped children's time); (b) the last sampled
    CPU of every descendant seen (misses the last second of a process and processes shorter than a second).
    """

    def __init__(self) -> None:
        self._t0 = time.monotonic()
        self._machine0 = _machine()
        self._times0 = os.times()
        self._start = _tree()
        self._seen = dict(self._start)
        self._loads = [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(1.0):
            self._loads.append(os.getloadavg()[0])
            self._seen.update(_tree())

    def stop(self) -> PhaseLoad:
        self._stop.set()
        self._thread.join()
        end = _tree()
        self._seen.update(end)
        t, t0 = os.times(), self._times0
        mine = t.user + t.system - t0.user - t0.system
        reaped = t.children_user + t.children_system - t0.children_user - t0.children_system
        exact = mine + reaped + sum(v[1] - self._start.get(k, (0, 0, 0))[1] for k, v in end.items())
        exact -= sum(v[1] for k, v in self._start.items() if v[2] and k not in end)  # counted in `reaped`
        sampled = mine + sum(v[0] - self._start.get(k, (0, 0, 0))[0] for k, v in self._seen.items())
        busy, total = (a - b for a, b in zip(_machine(), self._machine0, strict=True))
        others = max(busy - max(exact, sampled), 0.0) / total if total > 0 else 0.0
        self._loads.append(os.getloadavg()[0])
        return PhaseLoad(time.monotonic() - self._t0, statistics.fmean(self._loads), others)


def merged(loads: list[PhaseLoad]) -> PhaseLoad | None:
    seconds = sum(p.seconds for p in loads)
    if not loads or seconds <= 0:
        return None
    return PhaseLoad(
        seconds,
        sum(p.load1 * p.seconds for p in loads) / seconds,
        sum(p.others * p.seconds for p in loads) / seconds,
    )


# ------------------------------------------------------------------------------------------- codes and context


@dataclass(frozen=True)
class Code:
    """One checkout: its label in the table and the ``src`` folder put first on PYTHONPATH."""

    label: str
    src: Path

    def env(self, data_dir: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PERFTUNE_", "MLFLOW_"))}
        return {
            **env,
            "PYTHONPATH": str(self.src),
            "PERFTUNE_DATA_DIR": str(data_dir),
            "COLUMNS": "400",  # Rich wraps at 80 columns without a terminal; the output is parsed
            "NO_COLOR": "1",
            "PATH": f"{BIN}:{env.get('PATH', '')}",
        }


def parse_code(text: str) -> Code:
    label, sep, src = text.partition("=")
    if not sep or not label or not src:
        raise argparse.ArgumentTypeError(f"{text!r} is not LABEL=SRC; e.g. before=../wt-before/src")
    path = Path(src).resolve()
    if not (path / "perftune" / "__init__.py").is_file():
        raise argparse.ArgumentTypeError(f"{path} has no perftune package; give the checkout's src folder")
    return Code(label, path)


@dataclass
class Result:
    """One row of the table."""

    decision: str
    code: str
    phases: str  # the key of its phases' load
    quiet: str
    loaded: str
    agreement: str
    target: str
    passed: bool | None  # None: not decided (an error)


@dataclass
class Context:
    args: argparse.Namespace
    sizes: Sizes
    codes: list[Code]
    work: Path
    procs: Processes
    loads: dict[tuple[str, str, Condition], list[PhaseLoad]] = field(default_factory=dict)
    cache: dict[tuple[str, str], Any] = field(default_factory=dict)  # set-ups shared between decisions

    def perftune(self, code: Code, *args: str | Path, timeout: float | None = None) -> tuple[int | None, str]:
        """Run one perftune command of ``code``; (exit code or None on timeout, its output)."""
        command = [str(BIN / "perftune"), *map(str, args)]
        process, log = self.procs.start(command, code.env(self.args.data_dir))
        try:
            rc: int | None = process.wait(timeout=timeout or self.args.timeout)
        except subprocess.TimeoutExpired:
            rc = None
        finally:
            self.procs.stop(process)
        return rc, log.read_text(errors="replace")

    def must(self, code: Code, *args: str | Path) -> str:
        rc, output = self.perftune(code, *args)
        if rc != 0:
            raise Failed(f"{code.label}: perftune {args[0]} failed ({rc}): {last_line(output)}")
        return output

    @contextlib.contextmanager
    def phase(self, decision: str, code: Code, condition: Condition) -> Iterator[None]:
        """Measure the load of one phase; a loaded phase runs beside ``busy 2``, started and ended here."""
        meter, busy = LoadMeter(), None
        try:
            if condition is Condition.LOADED:
                busy, _ = self.procs.start(
                    [sys.executable, str(self.args.busy), "2", str(min(self.args.timeout, 1800))]
                )
                _wait_for_children(busy, 2)
            yield
        finally:
            if busy is not None:
                self.procs.stop(busy)
            self.loads.setdefault((decision, code.label, condition), []).append(meter.stop())


class Failed(Exception):
    """A step failed: the decision is reported as an error for that code (and not repeated for it)."""


Found = dict[Condition, list[Any]]  # what each repetition of one code found, by condition


def setup(ctx: Context, prepare: Callable[[Code], Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """``prepare`` each code (quiet, outside any phase): (what it returned, by code label; errors, by label)."""
    ready, errors = {}, {}
    for code in ctx.codes:
        try:
            ready[code.label] = prepare(code)
        except Failed as exc:
            errors[code.label] = str(exc)
    return ready, errors


def repeat(
    ctx: Context, phases: str, schedule: list[Condition], ready: dict[str, Any], errors: dict[str, str],
    step: Callable[[Code, Condition, int], Any],
) -> dict[str, Found]:  # fmt: skip
    """Run ``step`` for every condition of ``schedule`` and every ready code, the codes interleaved within each
    repetition, each step in its own measured phase (loaded: beside busy)."""
    found: dict[str, Found] = {c.label: {Condition.QUIET: [], Condition.LOADED: []} for c in ctx.codes}
    for i, condition in enumerate(schedule):
        for code in ctx.codes:
            if code.label not in ready or code.label in errors:
                continue
            try:
                with ctx.phase(phases, code, condition):
                    value = step(code, condition, i)
            except Failed as exc:
                errors[code.label] = str(exc)
                continue
            found[code.label][condition].append(value)
    return found


def _wait_for_children(process: subprocess.Popen, n: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(psutil.Error):
            if len(psutil.Process(process.pid).children()) >= n:
                return
        time.sleep(0.05)
    raise SystemExit(f"busy did not start {n} processes (exit {process.poll()})")


def last_line(output: str) -> str:
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


def write_spec(example: str, path: Path, workspace: Path, change: Callable[[dict], None]) -> Path:
    raw = yaml.safe_load((REPO / example).read_text())
    raw["workspace"] = str(workspace)
    change(raw)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def tune(ctx: Context, code: Code, spec: Path, out: Path) -> dict[str, Any]:
    """``perftune tune SPEC --out OUT``: its summary.json."""
    rc, output = ctx.perftune(code, "tune", spec, "--out", out)
    if rc != 0:
        raise Failed(f"tune failed ({rc}): {last_line(output)}")
    return json.loads((out / "summary.json").read_text())


def pct(x: float) -> str:
    return f"{x:.0%}"


def errored(decision: str, code: str, phases: str, message: str, target: str) -> Result:
    return Result(decision, code, phases, "—", "—", message, target, None)


# ------------------------------------------------------------------------------------------- quick.yaml


def _quick_spec(ctx: Context, code: Code) -> Path:
    workspace = ctx.work / code.label / "quick-ws"
    return write_spec("examples/quick.yaml", workspace.parent / "quick.yaml", workspace, lambda raw: None)


def decide_quick(ctx: Context) -> list[Result]:
    ready, errors = setup(ctx, lambda code: _quick_spec(ctx, code))

    def step(code: Code, condition: Condition, i: int) -> dict[str, Any]:
        out = ctx.work / code.label / f"quick-{i}-{condition}"
        result = tune(ctx, code, ready[code.label], out)
        if condition is Condition.QUIET:
            ctx.cache.setdefault(("quick-run", code.label), out)  # the gate's study, when it runs later
        return result

    n = ctx.sizes.quick_runs
    found = repeat(ctx, "quick", alternate(n, n), ready, errors, step)
    return [row for code in ctx.codes for row in _quick_rows(code.label, found[code.label], errors.get(code.label))]


def _quick_rows(code: str, runs: Found, error: str | None) -> list[Result]:
    names = ("quick.yaml: same trial outcome", "quick.yaml: same best config")
    if error:
        return [errored(names[0], code, "quick", error, "≥ 95 %"), errored(names[1], code, "quick", error, "all")]
    outcomes = {c: [{_key(t): t["status"] for t in s["trials"]} for s in ss] for c, ss in runs.items()}
    quiet, loaded = outcomes[Condition.QUIET], outcomes[Condition.LOADED]
    share = statistics.fmean(_agreement(q, x) for q, x in product(quiet, loaded))
    pairs = list(combinations(quiet, 2))
    floor = f" (quiet × quiet {pct(statistics.fmean(_agreement(a, b) for a, b in pairs))})" if pairs else ""
    bests = [{(g["dataset"], g["model"]): _best(g) for g in s["groups"]} for ss in runs.values() for s in ss]
    groups = sorted(set().union(*bests))
    same = [g for g in groups if bests[0].get(g) is not None and all(b.get(g) == bests[0][g] for b in bests)]
    differ = ", ".join(f"{d} × {m}" for d, m in groups if (d, m) not in same)
    return [
        Result(names[0], code, "quick", _stopped(quiet), _stopped(loaded), f"quiet × loaded {pct(share)}{floor}",
               "≥ 95 %", share >= 0.95),
        Result(names[1], code, "quick", f"{len(quiet)} runs", f"{len(loaded)} runs",
               f"{len(same)}/{len(groups)} groups the same in every run" + (f"; not: {differ}" if differ else ""),
               "all groups", len(same) == len(groups)),
    ]  # fmt: skip


def _key(trial: dict[str, Any]) -> tuple[str, str, str]:
    return trial["dataset"], trial["model"], json.dumps(trial["params"], sort_keys=True)


def _agreement(a: dict, b: dict) -> float:
    """Share of trials (in either run) that ended the same way in both."""
    keys = set(a) | set(b)
    return sum(a.get(k) == b.get(k) for k in keys) / len(keys) if keys else 1.0


def _stopped(runs: list[dict]) -> str:
    return ", ".join(f"{sum(v == 'stopped_budget' for v in o.values())}/{len(o)} stopped by budget" for o in runs)


def _best(group: dict[str, Any]) -> str | None:
    best = group.get("best_feasible")
    return json.dumps(best["params"], sort_keys=True) if best else None


# ------------------------------------------------------------------------------------------- Fashion-MNIST


def decide_fashion(ctx: Context) -> list[Result]:
    sample = ctx.args.fashion_sample or ctx.sizes.fashion_sample
    bound = 90 * sample / FASHION_SAMPLE

    def smaller(raw: dict) -> None:
        raw["datasets"][0]["sample"] = sample
        raw["constraints"] = [f"train_time_s <= {bound:g}" if c.startswith("train_time_s") else c
                              for c in raw["constraints"]]  # fmt: skip

    def prepare(code: Code) -> Path:
        workspace = ctx.work / code.label / "fashion-ws"
        ctx.must(code, "data", "ingest-images", ctx.args.data_dir / "fashion-mnist", "--name", "fashion",
                 "--classes", "10", "--workspace", workspace)  # fmt: skip
        return write_spec("examples/fashion_mnist.yaml", workspace.parent / "fashion.yaml", workspace, smaller)

    def step(code: Code, condition: Condition, i: int) -> dict | None:
        result = tune(ctx, code, ready[code.label], ctx.work / code.label / f"fashion-{i}-{condition}")
        return next((g for g in result["groups"] if g["model"] == "torch_cnn"), None)

    ready, errors = setup(ctx, prepare)
    found = repeat(ctx, "fashion", alternate(1, 1), ready, errors, step)
    name, target = f"fashion (sample {sample}, train_time_s <= {bound:g}): feasible CNN", "a feasible CNN loaded"
    results = []
    for code in ctx.codes:
        if code.label in errors:
            results.append(errored(name, code.label, "fashion", errors[code.label], target))
            continue
        quiet, loaded = found[code.label][Condition.QUIET], found[code.label][Condition.LOADED]
        ok = bool(loaded) and all(g and g["best_feasible"] for g in loaded)
        results.append(
            Result(
                name,
                code.label,
                "fashion",
                ", ".join(map(_cnn, quiet)),
                ", ".join(map(_cnn, loaded)),
                "found under load" if ok else "none under load",
                target,
                ok,
            )
        )
    return results


def _cnn(group: dict | None) -> str:
    if group is None:
        return "no torch_cnn group"
    counts, best = group["counts"], group["best_feasible"]
    accuracy = f", best val acc {best['metrics']['accuracy']:.3f}" if best else ""
    return f"{counts['feasible']}/{group['n_trials']} feasible, {counts['stopped_budget']} stopped by budget{accuracy}"


# ------------------------------------------------------------------------------------------- repeated verdicts


def same_every_time(name: str, code: str, phases: str, runs: Found, error: str | None, detail: str) -> Result:
    """A verdict repeated quiet and loaded: (verdict, detail) pairs; it holds when every verdict is the same."""
    loaded_n = len(runs[Condition.LOADED])
    target = f"{loaded_n} of {loaded_n} loaded = quiet"
    if error:
        return errored(name, code, phases, error, target)
    quiet, loaded = runs[Condition.QUIET], runs[Condition.LOADED]
    reference = statistics.mode(v for v, _ in quiet)
    same = sum(v == reference for v, _ in loaded)
    return Result(
        name, code, phases, "; ".join(f"{v} ({detail} {d})" for v, d in quiet),
        "; ".join(f"{v} ({detail} {d})" for v, d in loaded), f"{same}/{loaded_n} loaded = quiet ({reference})",
        target, len({v for v, _ in quiet + loaded}) == 1,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------- gate

GATE_LINE = re.compile(
    r"latency_ms_p95 <= [\d.]+: (passed|failed)[^(]*\(latency_ms_p95 = ([\d.e+-]+)(?: \[([\d.e+-]+), ([\d.e+-]+)\])?"
)


def _verdict(rc: int | None, output: str) -> tuple[str, str]:
    """(verdict, the p95 it judged with its interval where printed) from ``perftune register``'s output."""
    match = GATE_LINE.search(output)
    p95 = "?" if not match else match[2] + (f" [{match[3]}, {match[4]}]" if match[3] else "")
    if rc == 0:
        return "passed", p95
    if rc == 1 and "gate failed" in output:
        return "failed", p95
    raise Failed(f"register failed ({rc}): {last_line(output)}")


def decide_gate(ctx: Context) -> list[Result]:
    def prepare(code: Code) -> Path:
        out = ctx.cache.get(("quick-run", code.label))
        if out is None:  # no quick.yaml run of this code yet: one quiet study, not measured
            out = ctx.work / code.label / "gate-study"
            tune(ctx, code, _quick_spec(ctx, code), out)
        return out

    def step(code: Code, condition: Condition, i: int) -> tuple[str, str]:
        return _verdict(
            *ctx.perftune(code, "register", ready[code.label], "--name", "demo-gate", "--dataset", "diabetes")
        )

    ready, errors = setup(ctx, prepare)
    found = repeat(ctx, "gate", alternate(ctx.sizes.gate_quiet, ctx.sizes.gate_loaded), ready, errors, step)
    name = "register gate verdict (diabetes)"
    return [same_every_time(name, c.label, "gate", found[c.label], errors.get(c.label), "p95 ms") for c in ctx.codes]


# ------------------------------------------------------------------------------------------- BBC News


def _bbc(ctx: Context, code: Code) -> dict[str, Any]:
    """BBC ingested and the cut study tuned, quiet and not measured (once per code): out, uri, trial ids."""
    key = ("bbc", code.label)
    if isinstance(ctx.cache.get(key), Failed):
        raise ctx.cache[key]
    if key not in ctx.cache:
        try:
            ctx.cache[key] = _bbc_study(ctx, code)
        except Failed as exc:
            ctx.cache[key] = exc
            raise
    return ctx.cache[key]


def _bbc_study(ctx: Context, code: Code) -> dict[str, Any]:
    workspace = ctx.work / code.label / "bbc-ws"

    def cut(raw: dict) -> None:
        raw["datasets"][0]["sample"] = ctx.args.bbc_sample or ctx.sizes.bbc_sample
        raw["search"]["space"] = {**raw["search"]["space"], **BBC_CONFIG, "quantize": [False, True]}
        raw["search"].pop("scheduler", None)  # two trials: nothing for ASHA to choose between

    ctx.must(code, "data", "ingest-text", ctx.args.data_dir / "bbc" / "bbc-fulltext.zip", "--name", "bbc",
             "--workspace", workspace)  # fmt: skip
    out = ctx.work / code.label / "bbc-study"
    result = tune(ctx, code, write_spec("examples/bbc_news.yaml", workspace.parent / "bbc.yaml", workspace, cut), out)
    trials = {bool(t["params"]["quantize"]): t["trial_id"] for t in result["trials"]}
    return {"out": out, "uri": result["tracking"]["uri"], "trials": trials}


def _register_bbc(ctx: Context, code: Code, name: str, quantize: bool) -> dict[str, str]:
    """``perftune register --trial … --force`` of the study's uncompressed or int8 trial: the version's tags."""
    from mlflow.tracking import MlflowClient

    bbc = _bbc(ctx, code)
    rc, output = ctx.perftune(
        code, "register", bbc["out"], "--name", name, "--trial", bbc["trials"][quantize], "--force"
    )
    match = re.search(rf"registered {re.escape(name)} version (\d+)", output)
    if rc != 0 or not match:
        raise Failed(f"register failed ({rc}): {last_line(output)}")
    version = MlflowClient(tracking_uri=bbc["uri"], registry_uri=bbc["uri"]).get_model_version(name, match[1])
    return {**version.tags, "version": match[1]}


def decide_runtime(ctx: Context) -> list[Result]:
    def step(code: Code, condition: Condition, i: int) -> tuple[str, str]:
        tags = _register_bbc(ctx, code, "bbc-runtime", quantize=False)
        p95 = "/".join(tags.get(f"test.latency_ms_p95_{runtime}", "?") for runtime in ("torch", "onnx"))
        return tags.get("perftune.runtime", "(no tag)"), p95

    ready, errors = setup(ctx, lambda code: _bbc(ctx, code))
    schedule = alternate(ctx.sizes.runtime_quiet, ctx.sizes.runtime_loaded)
    found = repeat(ctx, "runtime", schedule, ready, errors, step)
    name = f"bbc (sample {ctx.args.bbc_sample or ctx.sizes.bbc_sample}) registered runtime"
    return [
        same_every_time(name, c.label, "runtime", found[c.label], errors.get(c.label), "p95 ms torch/onnx")
        for c in ctx.codes
    ]


# ------------------------------------------------------------------------------------------- serve


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    threads: str  # how serve's threads were set


def _article(data_dir: Path) -> str:
    with zipfile.ZipFile(data_dir / "bbc" / "bbc-fulltext.zip") as z:
        name = next(n for n in sorted(z.namelist()) if n.endswith(".txt") and z.getinfo(n).file_size > 1000)
        return z.read(name).decode("utf-8", errors="replace")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(ctx: Context, code: Code) -> Server:
    """Register the BBC study's int8 network and serve it on a free port of 127.0.0.1 (ready when returned)."""
    version = _register_bbc(ctx, code, "bbc-int8", quantize=True)["version"]
    _, help_text = ctx.perftune(code, "serve", "--help")
    threads = ["--threads", str(ctx.args.serve_threads)] if "--threads" in help_text else []
    port, uri, scoring = _free_port(), _bbc(ctx, code)["uri"], f"sqlite:///{ctx.work / code.label / 'scoring.db'}"
    command = [str(BIN / "perftune"), "serve", f"bbc-int8/{version}", "--port", str(port), "--tracking-uri", uri,
               "--scoring-uri", scoring, "--log-level", "warning", "--poll-interval", "0", *threads]  # fmt: skip
    process, log = ctx.procs.start(command, code.env(ctx.args.data_dir))
    server = Server(process, port, " ".join(threads) or "serve has no --threads")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise Failed(f"serve exited ({process.returncode}): {last_line(log.read_text(errors='replace'))}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/v2/health/ready")
            if connection.getresponse().status == 200:
                return server
        time.sleep(0.5)
    ctx.procs.stop(process)
    raise Failed(f"serve not ready on 127.0.0.1:{port} after 180 s")


def _requests(port: int, body: bytes, n: int) -> tuple[list[float], int]:
    """``n`` single-row requests, one after another on one keep-alive connection: (latencies in ms, non-200s)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times, errors = [], 0
    try:
        for _ in range(n):
            started = time.perf_counter()
            connection.request("POST", "/invocations", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            times.append((time.perf_counter() - started) * 1000)
            errors += response.status != 200
    finally:
        connection.close()
    return times, errors


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def decide_serve(ctx: Context) -> list[Result]:
    body = json.dumps({"inputs": [_article(ctx.args.data_dir)]}).encode()
    ready, errors = setup(ctx, lambda code: _serve(ctx, code))
    try:
        for server in ready.values():
            _requests(server.port, body, 20)  # warm-up, not counted

        def step(code: Code, condition: Condition, i: int) -> tuple[list[float], int]:
            return _requests(ready[code.label].port, body, ctx.sizes.serve_requests)

        rounds = ctx.sizes.serve_rounds
        found = repeat(ctx, "serve", alternate(rounds, rounds), ready, errors, step)
    finally:
        for server in ready.values():
            ctx.procs.stop(server.process)
    name, target, results = "serve bbc int8: p95 loaded ÷ quiet", "≤ 3", []
    for code in ctx.codes:
        if code.label in errors:
            results.append(errored(name, code.label, "serve", errors[code.label], target))
            continue
        ms = {c: [t for times, _ in runs for t in times] for c, runs in found[code.label].items()}
        bad = sum(n for runs in found[code.label].values() for _, n in runs)
        ratio = p95(ms[Condition.LOADED]) / p95(ms[Condition.QUIET])
        note = f"{rounds} × {ctx.sizes.serve_requests} requests per condition; {ready[code.label].threads}"
        shown = {c: f"p50 {statistics.median(v):.1f} ms, p95 {p95(v):.1f} ms" for c, v in ms.items()}
        results.append(
            Result(name, code.label, "serve", shown[Condition.QUIET], shown[Condition.LOADED],
                   f"× {ratio:.2f} ({note}" + (f"; {bad} non-200)" if bad else ")"), target, ratio <= 3 and not bad)
        )  # fmt: skip
    return results


# ------------------------------------------------------------------------------------------- main

DECISIONS: dict[str, Callable[[Context], list[Result]]] = {
    "quick": decide_quick,
    "fashion": decide_fashion,
    "gate": decide_gate,
    "runtime": decide_runtime,
    "serve": decide_serve,
}


def check_codes(codes: list[Code], data_dir: Path) -> None:
    """Each code's commands must import perftune from its own src (not an installed or editable copy)."""
    for code in codes:
        found = subprocess.run(
            [sys.executable, "-c", "import perftune; print(perftune.__file__)"],
            env=code.env(data_dir), capture_output=True, text=True, check=False,
        ).stdout.strip()  # fmt: skip
        if not found.startswith(str(code.src)):
            raise SystemExit(f"--code {code.label}: perftune imports from {found or '(nowhere)'}, not {code.src}")


def print_table(ctx: Context, results: list[Result]) -> None:
    def load(result: Result, condition: Condition) -> str:
        phase = merged(ctx.loads.get((result.phases, result.code, condition), []))
        return f"load {phase.load1:.1f}, others {pct(phase.others)}, {phase.seconds:.0f} s" if phase else "—"

    header = ("decision", "code", "quiet", "loaded", "agreement", "target", "result", "quiet phases", "loaded phases")
    rows = [
        (r.decision, r.code, r.quiet, r.loaded, r.agreement, r.target,
         "—" if r.passed is None else "pass" if r.passed else "FAIL",
         load(r, Condition.QUIET), load(r, Condition.LOADED))
        for r in results
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    print()
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print(
        f"\n{os.cpu_count()} cores; load = mean 1-minute load average over the phases; others = share of the machine's"
        " CPU used by processes this benchmark did not start (upper bound); loaded = beside `busy 2`."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=parse_code, action="append", metavar="LABEL=SRC",
                        help="a checkout's src folder (repeatable; default: this checkout)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, smaller samples (a smoke run)")
    parser.add_argument("--only", nargs="+", choices=list(DECISIONS), help="run only these decisions")
    parser.add_argument(
        "--fashion-sample", type=int, help="images in the Fashion-MNIST study (default 6000; 2000 quick)"
    )
    parser.add_argument("--bbc-sample", type=int, help="articles in the BBC study (default 800; 300 quick)")
    parser.add_argument("--serve-threads", type=int, default=1, help="serve's --threads, where it has one")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds a command may take (also busy's bound)")
    parser.add_argument("--busy", type=Path, default=REPO.parent / "shared" / "tools" / "busy")
    parser.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("PERFTUNE_DATA_DIR", REPO.parent / "shared" / "datasets"))
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary workspaces and logs (path printed)")
    args = parser.parse_args()
    args.data_dir = args.data_dir.resolve()
    if not args.busy.is_file():
        raise SystemExit(f"{args.busy} does not exist; pass --busy PATH to the shared tools' busy")
    codes = args.code or [Code("this", REPO / "src")]
    if len({c.label for c in codes}) != len(codes):
        raise SystemExit("--code labels must differ; e.g. --code before=… --code after=…")
    check_codes(codes, args.data_dir)
    work = Path(tempfile.mkdtemp(prefix="perftune-bench-contention-"))
    (work / "logs").mkdir()
    ctx = Context(args, QUICK if args.quick else FULL, codes, work, Processes(work / "logs"))
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    print(
        f"{'smoke run (--quick)' if args.quick else 'full run'}: codes {', '.join(f'{c.label}={c.src}' for c in codes)}"
    )
    print(f"workspaces and logs in {work}" + ("" if args.keep else " (removed at the end; --keep keeps them)"))
    results: list[Result] = []
    started = time.monotonic()
    try:
        for name in args.only or list(DECISIONS):
            t0 = time.monotonic()
            results += DECISIONS[name](ctx)
            print(f"  {name}: {time.monotonic() - t0:.0f} s", flush=True)
    finally:
        ctx.procs.stop_all()
        if results:
            print_table(ctx, results)
            print(f"total {time.monotonic() - started:.0f} s")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
