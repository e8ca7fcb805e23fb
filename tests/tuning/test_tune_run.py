"""The study's Ray Tune run: how far ahead Tune may make trials, and which worker ran each trial."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray

from perftune.models.sgd import SGDLogistic
from perftune.results import Objective
from perftune.spec import SearchSpec
from perftune.tuning.search import build_search
from perftune.tuning.space import resolve_space
from perftune.tuning.trial import TrialSettings
from perftune.tuning.tune_run import GroupRun, StudyRun, _max_pending, worker_of

OBJ = [Objective("accuracy", "max")]


def _study(algorithm: str) -> StudyRun:
    search = SearchSpec(algorithm=algorithm, num_samples=4, space={"batch_size": [8, 16], "learning_rate": [0.01, 0.1]})
    setup = build_search(search, resolve_space(search.space, 100), OBJ, "classification", seed=0)
    group = GroupRun("d__m", "d", "m", "classification", setup, TrialSettings(SGDLogistic), None, (), OBJ)
    return StudyRun(Path("unused"), [group], cpus_per_trial=1.0, max_concurrent=None)


@pytest.mark.parametrize("algorithm", ["grid", "random"])
def test_tune_makes_more_trials_ahead_than_there_are_workers_for_grid_and_random(ray_session, algorithm):
    """With one trial made ahead (Ray's default for any searcher but its own), the worker that finishes first
    takes the trial a second worker was being started for, and Ray drops the starting one: trials shorter than a
    worker's start then run one at a time (budgets + ASHA on a part of thesis-small before this limit: one worker
    ran all 128 trials, the 2 cores 48 % busy)."""
    assert _max_pending(_study(algorithm)) > ray.cluster_resources()["CPU"]


def test_a_trial_names_the_worker_process_that_ran_it():
    assert worker_of({"pid": 4711, "node_ip": "10.0.0.5", "accuracy": 0.7}) == "10.0.0.5:4711"
    assert worker_of({}) is None  # a trial that never reported
