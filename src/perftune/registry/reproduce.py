"""Reproduce a registered version from its lineage alone: refit, re-test, and compare with what was registered."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from perftune.errors import UsageError
from perftune.registry.catalog import ModelRegistry
from perftune.registry.register import RefitPlan, refit
from perftune.track.lineage import environment_tags

# metrics that a seeded refit on the same data and packages must give bit for bit; the rest are timings
DETERMINISTIC = ("test_loss", "accuracy", "rmse", "steps", "model_size_bytes")


@dataclass
class MetricDiff:
    metric: str
    registered: float
    reproduced: float
    deterministic: bool

    @property
    def matches(self) -> bool:
        if not self.deterministic:
            return True  # timings differ run to run; shown, not judged
        both_nan = math.isnan(self.registered) and math.isnan(self.reproduced)
        return both_nan or math.isclose(self.registered, self.reproduced, rel_tol=1e-9, abs_tol=1e-12)


@dataclass
class Reproduction:
    name: str
    version: str
    fingerprint_registered: str
    fingerprint_now: str
    diffs: list[MetricDiff]
    environment_changes: dict[str, tuple[str, str]]  # tag → (registered, now)

    @property
    def data_matches(self) -> bool:
        return self.fingerprint_registered == self.fingerprint_now

    @property
    def matches(self) -> bool:
        return self.data_matches and all(d.matches for d in self.diffs)


def reproduce(registry: ModelRegistry, name: str, version: str | int, workspace: str | None = None) -> Reproduction:
    """Refit ``name`` v``version`` from the ``perftune.refit`` lineage tag and compare its test metrics."""
    registered = registry.version(name, version)
    tags = registered.tags
    if "perftune.refit" not in tags:
        raise UsageError(f"{name} v{version} has no perftune.refit lineage tag (not registered by perftune register)")
    plan = RefitPlan.from_json(tags["perftune.refit"])
    if workspace is not None:
        plan = replace(plan, workspace=workspace)
    refitted = refit(plan)
    diffs = [
        MetricDiff(metric, value, refitted.metrics.get(metric, math.nan), metric in DETERMINISTIC)
        for metric, value in sorted(registry.registered_metrics(registered).items())
    ]
    now = environment_tags()
    changes = {
        key: (tags[key], now.get(key, "—"))
        for key in sorted(tags)
        if key.startswith(("perftune.pkg.", "perftune.python", "perftune.hw.", "perftune.code."))
        and tags[key] != now.get(key, "—")
    }
    return Reproduction(
        name,
        str(version),
        tags.get("perftune.dataset.fingerprint", ""),
        refitted.dataset.fingerprint,
        diffs,
        changes,
    )
