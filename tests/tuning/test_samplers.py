"""perftune's Optuna samplers pickle at any moment, across NSGA-II's generations, and their copies go on alike."""

from __future__ import annotations

import pickle
import threading

import optuna
import pytest

from perftune.tuning.samplers import NSGAIISampler, TPESampler


def objectives(trial: optuna.Trial) -> tuple[float, float]:
    x, y = trial.suggest_float("x", 0, 1), trial.suggest_int("y", 1, 8)
    return x * y, (1 - x) + 1 / y


def test_optunas_own_nsga2_sampler_cannot_be_pickled():
    """Why perftune has its own: if Optuna's pickles one day, this test says the subclass can go."""
    with pytest.raises(TypeError, match="pickle"):
        pickle.dumps(optuna.samplers.NSGAIISampler(seed=0))


@pytest.mark.parametrize(
    ("sampler", "generations"),
    [(NSGAIISampler(seed=1, population_size=4), 3), (TPESampler(seed=1, n_startup_trials=4), None)],
    ids=["nsga2", "tpe"],
)
def test_a_study_pickled_after_any_trial_goes_on_as_the_original_does(sampler, generations):
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    for _ in range(14):  # NSGA-II: generations of 4 trials; TPE: past its 4 random start-up trials
        copy = pickle.loads(pickle.dumps(study))  # plain pickle: the classes are importable
        assert copy.sampler is not study.sampler
        ours, theirs = study.ask(), copy.ask()
        assert ours.number == theirs.number
        study.tell(ours, objectives(ours))
        copy.tell(theirs, objectives(theirs))
        assert study.trials[-1].params == copy.trials[-1].params  # the copy sampled what the original did
    # NSGA-II went through generations 0…3 (parents chosen from an elite population); TPE keeps none
    assert study.trials[-1].system_attrs.get("NSGAIISampler:generation") == generations


def test_the_copy_gets_new_unlocked_locks_even_when_the_original_is_inside_its_lock():
    sampler = NSGAIISampler(seed=0)
    with sampler._thread_lock:  # pickled while a thread holds the lock
        copy = pickle.loads(pickle.dumps(sampler))
    assert isinstance(copy._thread_lock, type(threading.Lock())) and copy._thread_lock is not sampler._thread_lock
    assert not copy._thread_lock.locked()
    assert "_perftune_locks" not in copy.__dict__
