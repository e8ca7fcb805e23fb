"""The metric registry: every metric perftune reports, with its unit, direction and behaviour.

A new metric is one :func:`register_metric` call. Budgets use ``growth`` to decide whether a metric can
stop a trial early (it only grows during training) or only decides feasibility at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Growth = Literal["cumulative", "level", "none"]
Phase = Literal["window", "final"]


@dataclass(frozen=True)
class Metric:
    """What a metric name means.

    Attributes:
        name: the reported key, with its unit in the name (``train_time_s``).
        direction: which way is better when it is an objective.
        phase: ``window`` metrics are reported every ``eval_every`` steps; ``final`` ones once per trial.
        growth: ``cumulative`` grows with steps at a rate (time, CPU seconds, steps); ``level`` is a
            peak that only rises (peak memory); ``none`` can go either way.
        tasks: the tasks the metric exists for.
        description: one line for people.
    """

    name: str
    direction: Literal["min", "max"]
    phase: Phase
    growth: Growth
    tasks: frozenset[str]
    description: str

    @property
    def can_stop_early(self) -> bool:
        return self.growth != "none"


_BOTH = frozenset({"classification", "regression"})
_REGISTRY: dict[str, Metric] = {}


def register_metric(metric: Metric) -> Metric:
    """Add a metric to the registry (a plug-in point)."""
    _REGISTRY[metric.name] = metric
    return metric


def get_metric(name: str) -> Metric | None:
    return _REGISTRY.get(name)


def metric_names() -> list[str]:
    return sorted(_REGISTRY)


def _m(name: str, direction: str, phase: str, growth: str, description: str, tasks: frozenset[str] = _BOTH) -> None:
    register_metric(Metric(name, direction, phase, growth, tasks, description))  # type: ignore[arg-type]


# ML metrics (validation data unless said otherwise)
_m("train_loss", "min", "window", "none", "mean training loss of the window's mini-batches (before each update)")
_m("val_loss", "min", "window", "none", "loss on the validation data, same loss as training")
_m("accuracy", "max", "window", "none", "validation accuracy", frozenset({"classification"}))
_m("rmse", "min", "window", "none", "validation root mean squared error", frozenset({"regression"}))
# system metrics during training
_m("steps", "min", "window", "cumulative", "mini-batch updates done")
_m("epoch", "min", "window", "cumulative", "passes over the training data (fractional)")
_m(
    "train_time_s",
    "min",
    "window",
    "cumulative",
    "time training took on its own so far, validation included: wall time minus the time the training thread "
    "waited for a CPU other processes held (what a wall-clock budget judges; see perftune.measure.contention)",
)
_m("wall_time_s", "min", "window", "cumulative", "wall time of training so far, contention included")
_m("cpu_s", "min", "window", "cumulative", "CPU seconds used by the trial's process so far (the compute budget)")
_m("step_time_ms_mean", "min", "window", "none", "mean wall time of one mini-batch update in the window")
_m("step_time_ms_p95", "min", "window", "none", "95th percentile step time in the window")
_m("cpu_percent", "min", "window", "none", "process CPU time / wall time × 100 over the window")
# what the trial received from the machine (perftune.measure.contention); a window's own, the trial's at its end
_m("cpu_wait_s", "min", "window", "none", "seconds the training thread was runnable but waited for a CPU")
_m("report_wait_s", "min", "window", "none", "seconds the trial spent handing reports to the driver (not training)")
_m("cpu_wait_share", "min", "window", "none", "cpu_wait_s as a share of the wall time (0 on a quiet machine)")
_m("runnable_per_core", "min", "window", "none", "runnable tasks per usable core on the machine (1 = full)")
_m("other_cpu_share", "min", "window", "none", "CPU used by other processes, as a share of the machine")
_m("steal_share", "min", "window", "none", "CPU time a hypervisor gave to other guests, as a share of the machine")
_m("memory_mb", "min", "window", "level", "RSS − shared of the trial's process (MiB)")
_m("memory_mb_peak", "min", "window", "level", "peak of memory_mb so far (MiB)")
_m("gpu_memory_mb", "min", "window", "level", "peak GPU memory allocated (MiB), only where a GPU exists")
# end-of-trial inference metrics
_m("latency_ms_p50", "min", "final", "none", "median latency of single-row predict, CPU waits left out (ms)")
_m("latency_ms_p95", "min", "final", "none", "95th percentile latency of single-row predict, CPU waits left out (ms)")
_m("latency_ms_p95_low", "min", "final", "none", "lower end of the 95 % interval of latency_ms_p95 (order statistics)")
_m("latency_ms_p95_high", "min", "final", "none", "upper end of the 95 % interval of latency_ms_p95 (order statistics)")
_m("latency_ms_p95_wall", "min", "final", "none", "latency p95 as the wall clock saw it, CPU waits included (ms)")
_m("latency_cpu_wait_share", "min", "final", "none", "share of the timed calls' wall time spent waiting for a CPU")
_m("latency_rounds", "max", "final", "none", "interleaved rounds the latency was measured in")
_m("latency_samples", "max", "final", "none", "single-row calls the latency figures rest on")
_m("throughput_rps", "max", "final", "none", "rows predicted per second in batches")
_m("model_size_bytes", "min", "final", "none", "size of the serialized model")
# post-training compression (families that compress: quantization, pruning); the plain metrics are after it
_m(
    "accuracy_uncompressed",
    "max",
    "final",
    "none",
    "validation accuracy before compression",
    frozenset({"classification"}),
)
_m("accuracy_drop", "min", "final", "none", "validation accuracy lost to compression (before − after)",
   frozenset({"classification"}))  # fmt: skip
_m("model_size_bytes_uncompressed", "min", "final", "none", "serialized size before compression")
_m("latency_ms_p95_uncompressed", "min", "final", "none", "single-row latency p95 before compression (ms)")
_m(
    "latency_compressed_ratio",
    "min",
    "final",
    "none",
    "latency p95 after compression ÷ before, measured interleaved on the network alone",
)
_m("sparsity", "max", "final", "none", "fraction of weights that are zero after pruning")
# registration of a PyTorch network: both runtimes measured on the same rows (the plain metrics are the served one's)
_m("latency_ms_p95_torch", "min", "final", "none", "single-row latency p95 with torch's forward pass (ms)")
_m("latency_ms_p95_onnx", "min", "final", "none", "single-row latency p95 with onnxruntime's forward pass (ms)")
for _runtime, _who in (("torch", "torch's"), ("onnx", "onnxruntime's")):
    for _end, _side in (("low", "lower"), ("high", "upper")):
        _m(f"latency_ms_p95_{_end}_{_runtime}", "min", "final", "none",
           f"{_side} end of the 95 % interval of the latency p95 with {_who} forward pass (ms)")  # fmt: skip
_m("throughput_rps_torch", "max", "final", "none", "rows per second in batches with torch's forward pass")
_m("throughput_rps_onnx", "max", "final", "none", "rows per second in batches with onnxruntime's forward pass")
_m("model_size_bytes_onnx", "min", "final", "none", "size of the network's ONNX export")
