"""The drift-test plug-in point: a test is one class in one file, registered with :func:`register_test`.

A test compares one column of a window (:class:`~perftune.monitor.profile.ColumnSummary`, counts only) with
its reference (:class:`~perftune.monitor.profile.ColumnProfile`) and returns a score. ``kind`` says how the
score is read against the threshold: a ``p_value`` signals drift *below* it (the distributions differ with
that significance), a ``distance`` *at or above* it. Statistics come from scipy/numpy, never hand-written.

Adding a test: a new module in this package with a subclass of :class:`DriftTest` decorated with
:func:`register_test`, imported in ``stattests/__init__.py``; the spec can then name it in ``monitor:``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np

from perftune.errors import SpecError, did_you_mean
from perftune.monitor.profile import CATEGORICAL, ColumnProfile, ColumnSummary

P_VALUE, DISTANCE = "p_value", "distance"


class DriftTest:
    """Base class of drift tests.

    Attributes:
        name: the name the spec uses (``monitor.columns.<col>.test``).
        kinds: the column kinds the test applies to (``numeric``, ``categorical``).
        kind: ``p_value`` (drift when the score is below the threshold) or ``distance`` (at or above).
        threshold: the default threshold (Evidently's: 0.05 for p-values, 0.1 for distances).
        description: one line for the README and the reports.
    """

    name: ClassVar[str]
    kinds: ClassVar[frozenset[str]]
    kind: ClassVar[Literal["p_value", "distance"]]
    threshold: ClassVar[float]
    description: ClassVar[str] = ""

    def score(self, reference: ColumnProfile, window: ColumnSummary) -> float:
        """The test's statistic (p-value or distance) of ``window`` against ``reference``."""
        raise NotImplementedError

    @classmethod
    def drifted(cls, score: float, threshold: float) -> bool:
        if not np.isfinite(score):
            return False
        return score < threshold if cls.kind == P_VALUE else score >= threshold


_TESTS: dict[str, type[DriftTest]] = {}


def register_test(cls: type[DriftTest]) -> type[DriftTest]:
    """Class decorator: make a drift test available by its ``name``."""
    _TESTS[cls.name] = cls
    return cls


def get_test(name: str) -> type[DriftTest]:
    from perftune.monitor import stattests  # noqa: F401  (registers the built-in tests)

    try:
        return _TESTS[name]
    except KeyError:
        raise SpecError(
            f"unknown drift test {name!r}{did_you_mean(name, _TESTS)}; known: {', '.join(sorted(_TESTS))}"
        ) from None


def drift_test_names() -> list[str]:
    from perftune.monitor import stattests  # noqa: F401

    return sorted(_TESTS)


def default_test(reference: ColumnProfile) -> str:
    """The test Evidently's documented defaults pick for this column.

    Reference of at most 1000 values: p-value tests — Kolmogorov–Smirnov (numeric), the two-proportion z-test
    (binary), chi-square (other categorical). Larger references: distances — Wasserstein normalized by the
    reference's std (numeric), Jensen–Shannon (categorical).
    """
    if reference.kind == CATEGORICAL:
        if reference.small:
            return "z" if len(reference.categories) <= 2 else "chisquare"
        return "jensenshannon"
    return "ks" if reference.small else "wasserstein"


# -- helpers the tests share ---------------------------------------------------------------------------


def proportions(reference: ColumnProfile, window: ColumnSummary, bins: Literal["fine", "deciles"] = "deciles"):
    """Reference and window proportions over the same buckets: categories (plus one for values the reference
    never had) or histogram bins (deciles: ten consecutive percentile bins)."""
    if reference.kind == CATEGORICAL:
        ref = np.append(np.asarray(reference.frequencies, dtype=float), 0.0)
        cur = np.append(window.frequencies.astype(float), float(window.unseen))
    else:
        ref, cur = np.asarray(reference.counts, dtype=float), window.counts.astype(float)
        if bins == "deciles":
            ref, cur = _deciles(ref), _deciles(cur)
    return ref / max(ref.sum(), 1.0), cur / max(cur.sum(), 1.0)


def _deciles(counts: np.ndarray) -> np.ndarray:
    # 100 bins → 10; a reference with fewer values than percentiles has fewer bins: group what there is
    groups = np.array_split(counts, min(10, counts.size)) if counts.size else [counts]
    return np.array([g.sum() for g in groups])


def contingency(reference: ColumnProfile, window: ColumnSummary) -> np.ndarray:
    """2 × k table of reference and window counts per category (categories neither side has dropped)."""
    table = np.array(
        [
            np.append(np.asarray(reference.frequencies, dtype=float), 0.0),
            np.append(window.frequencies.astype(float), float(window.unseen)),
        ]
    )
    return table[:, table.sum(axis=0) > 0]
