"""One Ray Tune run for a study's groups: each group's searcher sees its own trials only, in the study's order."""

from __future__ import annotations

import pytest
import ray.cloudpickle
from ray.tune.search import Searcher

from perftune.results import Objective, TrialState
from perftune.spec import SearchSpec
from perftune.tuning.search import build_search, searcher_names
from perftune.tuning.space import resolve_space
from perftune.tuning.study_search import SampleSearch, SearchGroup, StudyScheduler, StudySearch
from perftune.tuning.trial import GROUP_KEY

OBJ = [Objective("accuracy", "max")]
RAW = {"batch_size": [8, 16], "learning_rate": [0.001, 0.01], "epochs": 3}


def _group(key: str, algorithm: str, num_samples: int = 1, objectives: list[Objective] = OBJ) -> SearchGroup:
    search = SearchSpec(algorithm=algorithm, num_samples=num_samples, space=RAW)
    setup = build_search(search, resolve_space(search.space, 100), objectives, "classification", seed=0)
    return SearchGroup(key, setup.searcher, setup.num_samples, setup.constants)


class _Recorder(Searcher):
    """A searcher that suggests a fixed config and remembers which trials it was told about."""

    def __init__(self) -> None:
        super().__init__()
        self.completed: list[str] = []

    def suggest(self, trial_id: str) -> dict:
        return {"batch_size": 8, "learning_rate": 0.001}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.completed.append(trial_id)


def test_groups_are_searched_in_order_with_their_key_and_constants():
    search = StudySearch([_group("a", "grid"), _group("b", "tpe", num_samples=3)])
    assert search.total_samples == 4 + 3
    configs = [search.suggest(f"t{i}") for i in range(7)]
    assert [c[GROUP_KEY] for c in configs] == ["a"] * 4 + ["b"] * 3
    grid = {(c["batch_size"], c["learning_rate"]) for c in configs[:4]}
    assert grid == {(8, 0.001), (8, 0.01), (16, 0.001), (16, 0.01)}  # the whole grid, once
    assert all(c["epochs"] == 3 for c in configs)  # constants are added to every suggestion
    assert all(c["batch_size"] in (8, 16) for c in configs[4:])
    assert search.suggest("t7") == Searcher.FINISHED


def test_a_group_searcher_is_told_only_about_its_own_trials(tmp_path):
    first, second = _Recorder(), _Recorder()
    search = StudySearch([SearchGroup("a", first, 2), SearchGroup("b", second, 1)])
    for trial_id in ("t0", "t1", "t2"):
        search.suggest(trial_id)
    for trial_id in ("t2", "t0", "t1"):
        search.on_trial_complete(trial_id, {"accuracy": 0.5})
    assert first.completed == ["t0", "t1"] and second.completed == ["t2"]
    # the state Ray saves with the experiment restores where the search was (resume)
    search.save(str(tmp_path / "searcher.pkl"))
    restored = StudySearch([SearchGroup("a", _Recorder(), 2), SearchGroup("b", _Recorder(), 1)])
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert restored.owner == {"t0": "a", "t1": "a", "t2": "b"}
    assert restored.suggest("t3") == Searcher.FINISHED


def _copy(search: StudySearch) -> StudySearch:
    """What Ray does with the search algorithm: the Tuner pickles it as it starts, each checkpoint saves it."""
    return ray.cloudpickle.loads(ray.cloudpickle.dumps(search))


def _result(i: int) -> dict:
    return {"accuracy": 0.5 + 0.03 * i, "train_time_s": 1.0 / (1 + i), "trial_status": TrialState.COMPLETED}


@pytest.mark.parametrize("objectives", [OBJ, [*OBJ, Objective("train_time_s", "min")]], ids=["single", "multi"])
@pytest.mark.parametrize("algorithm", searcher_names())
def test_the_search_pickles_at_any_moment_and_its_copy_goes_on_as_the_original_would(algorithm, objectives):
    """Fresh, with trials running, after completed trials: a copy suggests what the original suggests next, and
    takes the results of trials suggested before it was made (NSGA-II's sampler holds a lock: see samplers.py)."""
    search = StudySearch([_group("g", algorithm, num_samples=20, objectives=objectives)])  # 19 are asked for
    running: list[str] = []
    for i in range(14):  # past TPE's 10 random start-up trials
        copy = _copy(search)
        suggested = search.suggest(f"t{i}")
        assert isinstance(suggested, dict) and copy.suggest(f"t{i}") == suggested
        running.append(f"t{i}")
        if i % 3 == 2:  # complete two of the running trials, in both
            for trial_id in running[:2]:
                for searcher in (search, copy):
                    searcher.on_trial_complete(trial_id, _result(int(trial_id[1:])))
            del running[:2]
            assert copy.suggest(f"n{i}") == search.suggest(f"n{i}")  # the copy learnt what the original did
            search.on_trial_complete(f"n{i}", None, error=True)  # a failed trial
    copy = _copy(search)
    suggested = search.suggest("t14")
    assert isinstance(suggested, dict) and copy.suggest("t14") == suggested


def test_random_search_is_seeded_and_tries_points_first():
    from perftune.tuning.space import to_ray

    space = to_ray(resolve_space(SearchSpec(space=RAW).space, 100), "random")
    first = SampleSearch(space, seed=3, points=[{"batch_size": 16, "learning_rate": 0.01}])
    second = SampleSearch(space, seed=3)
    assert first.suggest("t0") == {"batch_size": 16, "learning_rate": 0.01}
    assert [first.suggest(f"t{i}") for i in range(5)] == [second.suggest(f"t{i}") for i in range(5)]


def test_each_group_scheduler_sees_only_its_trials():
    class Trial:
        def __init__(self, group: str) -> None:
            self.config = {GROUP_KEY: group}

    class Counting(StudyScheduler):
        def __init__(self) -> None:
            super().__init__({})
            self.seen: list[str] = []

        def on_trial_result(self, controller, trial, result):
            self.seen.append(trial.config[GROUP_KEY])
            return "STOP"

    asha = Counting()
    scheduler = StudyScheduler({"a": asha})
    assert scheduler.on_trial_result(None, Trial("a"), {}) == "STOP"
    assert scheduler.on_trial_result(None, Trial("b"), {}) == "CONTINUE"  # group b has no scheduler
    assert asha.seen == ["a"]
