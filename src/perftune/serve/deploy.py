"""Deployment artifacts sized from a version's measurements: a Dockerfile and Kubernetes manifests.

The arithmetic (shown in a comment at the top of ``deployment.yaml``):

* one replica runs one server worker, which saturates one CPU at about
  ``1000 / (latency_ms_p50 + server_overhead_ms)`` single-row requests per second; planned at
  ``target_utilization`` of that, it carries ``per_replica_rps``;
* ``replicas = max(min_replicas, ceil(target_rps / per_replica_rps))``; the HorizontalPodAutoscaler may scale
  from there to ``replicas × max_scale`` at ``target_utilization`` CPU;
* memory request = ``max(predict_memory_mb, server_baseline_mb + model_size_mb) × memory_headroom``, limit =
  request × 1.5 — ``predict_memory_mb`` is RSS − shared of the registering process while it predicted, the
  baseline is a running ``perftune serve`` with a small model;
  CPU request = limit = one core (one worker), and that worker runs its model on one thread (``--threads 1``,
  and ``OMP_NUM_THREADS`` and its kin in the container's environment): more threads than the CPU limit only
  wait for each other under the CFS quota.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from perftune import __version__
from perftune.errors import UsageError
from perftune.measure.threads import thread_env, threads_text

# Measured by benchmarks/serving.py on the project's 2-core machine: the HTTP round trip of a single-row request
# beyond in-process predict (p50, concurrency 1: 0.3–0.65 ms), and RSS − shared of a running `perftune serve`
# (uvicorn, FastAPI, scikit-learn, the scoring log) holding a small model after load (238 MB).
SERVER_OVERHEAD_MS = 0.6
SERVER_BASELINE_MB = 240.0
TARGETS = ("k8s",)
# More replicas than this is not a sizing perftune should write unattended (and beyond what one HPA should manage).
MAX_REPLICAS = 1000


@dataclass(frozen=True)
class Sizing:
    name: str
    version: str
    latency_ms_p50: float
    predict_memory_mb: float
    model_size_mb: float
    target_rps: float
    server_overhead_ms: float = SERVER_OVERHEAD_MS
    server_baseline_mb: float = SERVER_BASELINE_MB
    target_utilization: float = 0.6
    min_replicas: int = 2
    max_scale: int = 3
    memory_headroom: float = 1.25
    threads: int = 1  # of the one worker on its one CPU (its affinity is the node's cores, not its CPU limit)

    @property
    def saturated_rps(self) -> float:
        return 1000.0 / (self.latency_ms_p50 + self.server_overhead_ms)

    @property
    def per_replica_rps(self) -> float:
        return self.saturated_rps * self.target_utilization

    @property
    def replicas(self) -> int:
        return max(self.min_replicas, math.ceil(self.target_rps / self.per_replica_rps))

    @property
    def working_set_mb(self) -> float:
        return max(self.predict_memory_mb, self.server_baseline_mb + self.model_size_mb)

    @property
    def memory_request_mi(self) -> int:
        return math.ceil(self.working_set_mb * self.memory_headroom)

    @property
    def memory_limit_mi(self) -> int:
        return math.ceil(self.memory_request_mi * 1.5)

    def explanation(self) -> str:
        return "\n".join(
            [
                f"Sized by perftune {__version__} from {self.name} v{self.version}'s held-out measurements:",
                f"  latency_ms_p50 = {self.latency_ms_p50:.4g} ms (in-process, single row)"
                f" + server overhead {self.server_overhead_ms} ms",
                f"  one worker saturates at 1000 / {self.latency_ms_p50 + self.server_overhead_ms:.4g}"
                f" = {self.saturated_rps:.1f} rps; planned at {self.target_utilization:.0%}"
                f" → {self.per_replica_rps:.1f} rps per replica",
                f"  replicas = max({self.min_replicas}, ceil({self.target_rps:g} / {self.per_replica_rps:.1f}))"
                f" = {self.replicas}; HPA {self.replicas}..{self.replicas * self.max_scale}"
                f" at {self.target_utilization:.0%} CPU",
                f"  memory request = max({self.predict_memory_mb:.1f} MB predict, {self.server_baseline_mb:g} MB server"
                f" + {self.model_size_mb:.3g} MB model) × {self.memory_headroom} = {self.memory_request_mi}Mi;"
                f" limit × 1.5 = {self.memory_limit_mi}Mi",
                f"  cpu request = limit = 1 (one server worker per replica, on {threads_text(self.threads)}:"
                f" --threads {self.threads})",
            ]
        )


def sizing_from_tags(name: str, version: str, tags: dict[str, str], target_rps: float) -> Sizing:
    try:
        latency = float(tags["test.latency_ms_p50"])
        memory = float(tags["test.predict_memory_mb"])
        size_mb = float(tags["test.model_size_bytes"]) / 2**20
    except (KeyError, ValueError):
        raise UsageError(
            f"{name} v{version} has no measured test.latency_ms_p50 / predict_memory_mb / model_size_bytes; "
            "deploy sizes from perftune register's measurements"
        ) from None
    sizing = Sizing(name, version, latency, memory, size_mb, target_rps)
    if sizing.replicas > MAX_REPLICAS:
        raise UsageError(
            f"--target-rps {target_rps:g} needs {sizing.replicas} replicas of {name} v{version} "
            f"({sizing.per_replica_rps:.1f} rps each), more than {MAX_REPLICAS}; check the number, or plan such "
            "a fleet by hand"
        )
    return sizing


def check_deploy_options(target: str, target_rps: float, port: int, out: Path) -> None:
    """One-line :class:`UsageError` for a bad option, before the registry is opened."""
    if target not in TARGETS:
        raise UsageError(f"--target {target!r} is not supported; use {', '.join(TARGETS)}")
    if not (math.isfinite(target_rps) and target_rps > 0):
        raise UsageError(f"--target-rps {target_rps:g}: give a positive, finite number of requests per second")
    if not 1 <= port <= 65535:
        raise UsageError(f"--port {port}: a port is 1–65535")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; name a folder for the manifests")


def _labels(s: Sizing) -> dict[str, str]:
    return {"app.kubernetes.io/name": "perftune-serve", "app.kubernetes.io/instance": _dns(s.name)}


def _dns(name: str) -> str:
    cleaned = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    return (cleaned or "model")[:50]


def cron_schedule(every: str) -> str:
    """A CronJob schedule for ``--monitor-every`` (5m, 15m, 1h, 6h, 1d): whole minutes that divide an hour,
    whole hours that divide a day, or one day — the intervals cron repeats evenly."""
    from perftune.spec import parse_window

    try:
        kind, seconds = parse_window(every)
    except ValueError:
        kind, seconds = "rows", 0.0
    minutes = seconds / 60
    if kind == "seconds" and minutes.is_integer():
        m = int(minutes)
        if m < 60 and 60 % m == 0:
            return f"*/{m} * * * *" if m > 1 else "* * * * *"
        if m % 60 == 0 and m < 1440 and 24 % (m // 60) == 0:
            return f"0 */{m // 60} * * *" if m > 60 else "0 * * * *"
        if m == 1440:
            return "0 0 * * *"
    raise UsageError(
        f"--monitor-every {every}: give minutes that divide an hour (1m, 5m, 15m, 30m), hours that divide a day "
        "(1h, 2h, 6h, 12h) or 1d — the intervals a CronJob repeats evenly"
    )


def _secret_env(name: str, secret: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": "uri"}}}


def monitor_cronjob(s: Sizing, reference: str, image: str, schedule: str) -> dict[str, Any]:
    """A CronJob running ``perftune monitor`` on the shared scoring database; a check with findings exits 1,
    so its Job fails (no retry) and shows up where failed Jobs are alerted on."""
    app = _dns(s.name)
    container = {
        "name": "monitor",
        "image": image,
        "args": ["monitor", reference, "--tracking-uri", "$(MLFLOW_TRACKING_URI)", "--scoring-uri",
                 "$(PERFTUNE_SCORING_URI)", "--server", f"http://{app}"],
        "env": [_secret_env("MLFLOW_TRACKING_URI", f"{app}-tracking"),
                _secret_env("PERFTUNE_SCORING_URI", f"{app}-scoring")],
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
    }  # fmt: skip
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": f"{app}-monitor"[:52], "labels": _labels(s)},
        "spec": {
            "schedule": schedule,
            "concurrencyPolicy": "Forbid",
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 5,
            "jobTemplate": {
                "spec": {
                    "backoffLimit": 0,
                    "template": {"metadata": {"labels": _labels(s)},
                                 "spec": {"restartPolicy": "Never", "containers": [container]}},
                }
            },
        },
    }  # fmt: skip


def manifests(
    s: Sizing, reference: str, image: str, port: int, token_secret: str | None, monitor_every: str | None = None
) -> list[dict[str, Any]]:
    app = _dns(s.name)
    args = ["serve", reference, "--host", "0.0.0.0", "--port", str(port), "--threads", str(s.threads),
            "--tracking-uri", "$(MLFLOW_TRACKING_URI)"]  # fmt: skip
    if monitor_every:  # the monitor reads what every replica logs: one shared scoring database
        args += ["--scoring-uri", "$(PERFTUNE_SCORING_URI)"]
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    if token_secret:
        args += ["--token-file", "/var/run/perftune/token"]
        volumes.append({"name": "token", "secret": {"secretName": token_secret}})
        mounts.append({"name": "token", "mountPath": "/var/run/perftune", "readOnly": True})
    container: dict[str, Any] = {
        "name": "server",
        "image": image,
        "args": args,
        "ports": [{"name": "http", "containerPort": port}],
        "env": [_secret_env("MLFLOW_TRACKING_URI", f"{app}-tracking")]
        + ([_secret_env("PERFTUNE_SCORING_URI", f"{app}-scoring")] if monitor_every else [])
        + [{"name": key, "value": value} for key, value in thread_env(s.threads).items()],
        "resources": {
            "requests": {"cpu": "1", "memory": f"{s.memory_request_mi}Mi"},
            "limits": {"cpu": "1", "memory": f"{s.memory_limit_mi}Mi"},
        },
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": "http"}, "periodSeconds": 10},
    }
    if mounts:
        container["volumeMounts"] = mounts
    pod: dict[str, Any] = {"containers": [container], "terminationGracePeriodSeconds": 30}
    if volumes:
        pod["volumes"] = volumes
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": app, "labels": _labels(s), "annotations": {"perftune/version": s.version}},
        "spec": {
            "replicas": s.replicas,
            "selector": {"matchLabels": _labels(s)},
            "template": {
                "metadata": {
                    "labels": _labels(s),
                    "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(port)},
                },
                "spec": pod,
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": app, "labels": _labels(s)},
        "spec": {"selector": _labels(s), "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": app, "labels": _labels(s)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": app},
            "minReplicas": s.replicas,
            "maxReplicas": s.replicas * s.max_scale,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": round(s.target_utilization * 100)},
                    },
                }
            ],
        },
    }
    docs = [deployment, service, hpa]
    if monitor_every:
        docs.append(monitor_cronjob(s, reference, image, cron_schedule(monitor_every)))
    return docs


def dockerfile(port: int) -> str:
    return f"""# perftune inference server (CPU). Build from the perftune checkout: docker build -f deploy/Dockerfile .
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install . \\
 && useradd --create-home --uid 10001 perftune
USER 10001
EXPOSE {port}
ENTRYPOINT ["perftune"]
CMD ["serve", "--help"]
"""


def write_deploy(
    out: Path,
    sizing: Sizing,
    reference: str,
    image: str,
    port: int,
    token_secret: str | None,
    monitor_every: str | None = None,
) -> list[Path]:
    docs = manifests(sizing, reference, image, port, token_secret, monitor_every)
    out.mkdir(parents=True, exist_ok=True)
    header = "".join(f"# {line}\n" for line in sizing.explanation().splitlines())
    written = []
    names = ("deployment.yaml", "service.yaml", "hpa.yaml", "monitor-cronjob.yaml")
    for doc, filename in zip(docs, names[: len(docs)], strict=True):
        path = out / filename
        path.write_text((header if filename == "deployment.yaml" else "") + yaml.safe_dump(doc, sort_keys=False))
        written.append(path)
    (out / "Dockerfile").write_text(dockerfile(port))
    sized = {**asdict(sizing), "replicas": sizing.replicas, "per_replica_rps": sizing.per_replica_rps}
    (out / "sizing.json").write_text(json.dumps(sized, indent=2) + "\n")
    return [*written, out / "Dockerfile", out / "sizing.json"]
