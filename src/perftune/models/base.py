"""The Trainer protocol and the registry of model families (a plug-in point).

A model family is one class that implements :class:`Trainer` and is registered with
:func:`register_family`. The trial runner owns the training loop (batching, timing, reporting); a trainer
only knows how to take one step on a mini-batch, evaluate, predict and serialize itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from perftune.errors import SpecError, did_you_mean

if TYPE_CHECKING:
    import numpy as np


class TrainingParams(BaseModel):
    """Hyperparameters of the training schedule, shared by every family."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(ge=1)
    epochs: int = Field(default=5, ge=1)
    max_steps: int | None = Field(default=None, ge=1, description="caps the number of mini-batch updates")


@dataclass(frozen=True)
class TaskInfo:
    """What a trainer needs to know about the data before it sees any."""

    task: str
    n_features: int
    classes: np.ndarray | None = None
    threads: int = 1  # CPU threads the trainer may use (``cpus_per_trial``); single-threaded families ignore it


class TrialDiverged(RuntimeError):
    """Training produced non-finite values (e.g. a learning rate too large for the data)."""


@runtime_checkable
class Trainer(Protocol):
    """One model being trained in a trial."""

    name: ClassVar[str]
    tasks: ClassVar[frozenset[str]]
    Params: ClassVar[type[TrainingParams]]

    def __init__(self, params: TrainingParams, info: TaskInfo, seed: int) -> None: ...

    def step(self, X: np.ndarray, y: np.ndarray) -> float:
        """Update on one mini-batch; return the batch's training loss measured before the update."""

    def evaluate(self, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """``val_loss`` and ``accuracy`` (classification) or ``rmse`` (regression) on ``X, y``."""

    def predict(self, X: np.ndarray) -> np.ndarray: ...

    def serialize(self) -> bytes:
        """The model's bytes as they would be stored; their length is ``model_size_bytes``."""

    @property
    def estimator(self) -> Any:
        """The underlying fitted model object (e.g. a scikit-learn estimator)."""

    # Optional: ``unsupported(n_features) -> str | None`` (classmethod), why the family cannot take data with this
    # many features (e.g. a CNN needs a square image), or None; studies skip such a dataset × family with the reason.
    # Optional: ``row_losses(served, X, y, task) -> np.ndarray`` (classmethod), the training loss of each row of
    # raw inputs ``X`` for the registered serving pipeline ``served``; monitoring reports their mean on labelled
    # scoring data as the realized ``loss`` beside the test split's. Families without it get no realized loss.


_FAMILIES: dict[str, type[Trainer]] = {}


def unsupported_features(family: type[Trainer], n_features: int) -> str | None:
    """Why ``family`` cannot take ``n_features`` features (its optional ``unsupported`` hook), or None."""
    check = getattr(family, "unsupported", None)
    return check(n_features) if check is not None else None


def register_family(cls: type[Trainer]) -> type[Trainer]:
    """Class decorator: make a model family available by its ``name``."""
    _FAMILIES[cls.name] = cls
    return cls


def get_family(name: str) -> type[Trainer]:
    # Import the built-in families on first use so that registration happens without import cycles.
    from perftune.models import sgd, torch_nets  # noqa: F401

    try:
        return _FAMILIES[name]
    except KeyError:
        hint = did_you_mean(name, _FAMILIES)
        raise SpecError(f"unknown model family {name!r}{hint}; known: {', '.join(sorted(_FAMILIES))}") from None


def family_names() -> list[str]:
    from perftune.models import sgd, torch_nets  # noqa: F401

    return sorted(_FAMILIES)


def validate_params(family: type[Trainer], params: dict[str, Any]) -> TrainingParams:
    """Check one configuration against the family's hyperparameters; errors name parameter and value."""
    try:
        return family.Params.model_validate(params)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "params"
            if err["type"] == "extra_forbidden":
                allowed = ", ".join(family.Params.model_fields)
                hint = did_you_mean(field, family.Params.model_fields)
                problems.append(f"{family.name} has no hyperparameter {field!r}{hint}; it takes {allowed}")
            elif err["type"] == "missing":
                problems.append(f"{family.name} needs hyperparameter {field!r}")
            else:
                problems.append(f"{family.name}: {field}={err.get('input')!r}: {err['msg']}")
        raise SpecError("; ".join(problems)) from None
