"""One Ray Tune run for a study's groups: each group's searcher sees its own trials only, in the study's order."""

from __future__ import annotations

from ray.tune.search import Searcher

from perftune.results import Objective
from perftune.spec import SearchSpec
from perftune.tuning.search import build_search
from perftune.tuning.space import resolve_space
from perftune.tuning.study_search import SampleSearch, SearchGroup, StudyScheduler, StudySearch
from perftune.tuning.trial import GROUP_KEY

OBJ = [Objective("accuracy", "max")]
RAW = {"batch_size": [8, 16], "learning_rate": [0.001, 0.01], "epochs": 3}


def _group(key: str, algorithm: str, num_samples: int = 1) -> SearchGroup:
    search = SearchSpec(algorithm=algorithm, num_samples=num_samples, space=RAW)
    setup = build_search(search, resolve_space(search.space, 100), OBJ, "classification", seed=0)
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
