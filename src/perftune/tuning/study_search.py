"""One Ray Tune run for every dataset × model group of a study.

A study used to start one Tuner per group: each paid Tune's start and stop, new trial actors (a worker
process importing perftune, scikit-learn and the data) and a tail where one core idled while the group's last
trial ran. Now the group is part of each trial's configuration (:data:`GROUP_KEY`) and one Tuner runs them all,
so workers stay warm across groups and the next group's trials fill the cores while a group's last trial ends.

:class:`StudySearch` is the Ray Tune searcher of that run: it holds one searcher per group (a list of
configurations for grid and random, Optuna for TPE/NSGA-II, any registered searcher) and asks them in the
study's order, a group's searcher only ever seeing its own trials. :class:`StudyScheduler` does the same for
trial schedulers (ASHA compares a trial only with the trials of its own group).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import ray.cloudpickle as cloudpickle
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from perftune.tuning.trial import GROUP_KEY


class ListSearch(Searcher):
    """Configurations known in advance (a grid, random samples, search points), in order, then FINISHED."""

    def __init__(self, configs: Sequence[dict[str, Any]]) -> None:
        super().__init__()
        self.configs = [dict(c) for c in configs]
        self.next = 0

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.next >= len(self.configs):
            return Searcher.FINISHED
        self.next += 1
        return dict(self.configs[self.next - 1])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass


class SampleSearch(Searcher):
    """Random search: the ``points`` first, then configurations drawn from Ray Tune's sampling domains with a
    seeded generator (the same seed gives the same trials)."""

    def __init__(self, param_space: dict[str, Any], seed: int, points: Sequence[dict[str, Any]] = ()) -> None:
        import numpy as np
        from ray.tune.search.sample import Domain

        super().__init__()
        self.domains = {k: v for k, v in param_space.items() if isinstance(v, Domain)}
        self.points = [dict(p) for p in points]
        self.rng = np.random.RandomState(seed)

    def suggest(self, trial_id: str) -> dict[str, Any]:
        if self.points:
            return self.points.pop(0)
        return {name: _plain(domain.sample(random_state=self.rng)) for name, domain in self.domains.items()}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python number it holds (configurations go to JSON and to MLflow params)."""
    return value.item() if hasattr(value, "item") else value


@dataclass
class SearchGroup:
    """One group's searcher within a study's run."""

    key: str
    searcher: Searcher
    num_samples: int
    constants: dict[str, Any] = field(default_factory=dict)
    suggested: int = 0
    exhausted: bool = False


class StudySearch(Searcher):
    """The searcher of a study's run: each group's own searcher, asked in order, with the group's key and
    constants added to what it suggests. A group that cannot suggest right now (``None``) lets the next group
    start; the run ends when every group has made all of its trials."""

    def __init__(self, groups: Sequence[SearchGroup]) -> None:
        super().__init__()
        self.groups = {g.key: g for g in groups}
        self.owner: dict[str, str] = {}

    @property
    def total_samples(self) -> int:
        return sum(g.num_samples for g in self.groups.values())

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True  # each group's searcher was given its space, metric and mode when it was built

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        for group in self.groups.values():
            if group.exhausted:
                continue
            config = group.searcher.suggest(trial_id)
            if config == Searcher.FINISHED:
                group.exhausted = True
                continue
            if config is None:
                continue
            group.suggested += 1
            group.exhausted = group.suggested >= group.num_samples
            self.owner[trial_id] = group.key
            return {**config, **group.constants, GROUP_KEY: group.key}
        return Searcher.FINISHED if all(g.exhausted for g in self.groups.values()) else None

    def _searcher_of(self, trial_id: str) -> Searcher | None:
        key = self.owner.get(trial_id)
        return self.groups[key].searcher if key is not None else None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        searcher = self._searcher_of(trial_id)
        if searcher is not None:
            searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        searcher = self._searcher_of(trial_id)
        if searcher is not None:
            searcher.on_trial_complete(trial_id, result, error)

    # Ray saves the searcher with the experiment's state and restores it on Tuner.restore (resume).
    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            cloudpickle.dump(self.__dict__, handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            self.__dict__.update(cloudpickle.load(handle))


class StudyScheduler(FIFOScheduler):
    """First in, first out across the study; each trial's results go to its group's scheduler, if it has one
    (e.g. ASHA), so a trial is only ever compared with trials of its own group."""

    def __init__(self, schedulers: dict[str, TrialScheduler]) -> None:
        super().__init__()
        self.schedulers = schedulers

    def _of(self, trial: Any) -> TrialScheduler | None:
        return self.schedulers.get(trial.config.get(GROUP_KEY))

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        scheduler = self._of(trial)
        if scheduler is not None:
            scheduler.on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        scheduler = self._of(trial)
        if scheduler is not None:
            scheduler.on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        scheduler = self._of(trial)
        if scheduler is None:
            return TrialScheduler.CONTINUE
        return scheduler.on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        scheduler = self._of(trial)
        if scheduler is not None:
            scheduler.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        scheduler = self._of(trial)
        if scheduler is not None:
            scheduler.on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "perftune: one scheduler per group"
