"""Spec search-space domains → concrete values for one dataset → Ray Tune's search space."""

from __future__ import annotations

import itertools
import math
from typing import Any

from perftune.spec import Domain, PowersOfTen, PowersOfTwo, Range, Values

Resolved = Values | Range


def resolve(domain: Domain, n_samples: int) -> Resolved:
    """Make a domain concrete for a dataset whose training fold has ``n_samples`` rows."""
    if isinstance(domain, PowersOfTwo):
        until = n_samples if domain.until == "n_samples" else domain.until
        values = tuple(2**e for e in range(domain.start_exp, int(math.log2(max(until, 1))) + 1))
        if not values:
            raise ValueError(f"powers_of_two from 2**{domain.start_exp} until {until} is empty")
        return Values(values)
    if isinstance(domain, PowersOfTen):
        return Values(tuple(float(f"1e{e}") for e in range(domain.start_exp, domain.end_exp + 1)))
    return domain


def resolve_space(space: dict[str, Domain], n_samples: int) -> dict[str, Resolved]:
    return {name: resolve(domain, n_samples) for name, domain in space.items()}


def grid_size(space: dict[str, Resolved]) -> int:
    """Number of configurations in a fully discrete space."""
    return math.prod(len(d.values) for d in space.values() if isinstance(d, Values))


def grid_points(space: dict[str, Resolved]) -> list[dict[str, Any]]:
    """Every configuration of a discrete space (for checks before a run)."""
    names = list(space)
    pools = [d.values if isinstance(d, Values) else (d.low,) for d in space.values()]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*pools)]


def to_ray(space: dict[str, Resolved], algorithm: str) -> dict[str, Any]:
    """Ray Tune's param_space: ``grid_search`` for grids, sampling domains otherwise."""
    from ray import tune  # here, not at import: checking a spec must not wait for Ray

    out: dict[str, Any] = {}
    for name, domain in space.items():
        if isinstance(domain, Values):
            if len(domain.values) == 1:
                out[name] = domain.values[0]
            elif algorithm == "grid":
                out[name] = tune.grid_search(list(domain.values))
            else:
                out[name] = tune.choice(list(domain.values))
        elif domain.integer:
            low, high = int(domain.low), int(domain.high) + 1  # Ray's upper bound is exclusive
            out[name] = tune.lograndint(low, high) if domain.log else tune.randint(low, high)
        else:
            out[name] = (
                tune.loguniform(domain.low, domain.high) if domain.log else tune.uniform(domain.low, domain.high)
            )
    return out
