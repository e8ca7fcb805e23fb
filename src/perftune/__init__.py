"""perftune: hyperparameter tuning with system metrics (time, CPU, memory, latency, size) as first-class
objectives and constraints, tracked in MLflow, on Ray Tune."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from perftune.results import StudyResult


def tune(spec: Any, **kwargs: Any) -> StudyResult:
    """Run a study: ``spec`` is a :class:`perftune.spec.Spec` or a path to a YAML spec.

    Keyword arguments are those of :func:`perftune.tuning.engine.run_study` (``out``, ``resume``,
    ``address``, ``progress``).
    """
    from perftune.tuning.engine import run_study

    return run_study(spec, **kwargs)


__all__ = ["__version__", "tune"]
