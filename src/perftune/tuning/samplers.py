"""Optuna's samplers as perftune's searchers use them: picklable at any moment.

Ray Tune pickles a study's search algorithm when the Tuner starts (its ``tuner.pkl``, read by ``Tuner.restore``)
and again with every experiment checkpoint (``Searcher.save``, what ``perftune tune --resume`` restores). The
search algorithm owns its Optuna study and the study owns its sampler, so the sampler must pickle whatever it is
doing. Optuna's genetic samplers (NSGA-II and NSGA-III, through ``optuna.samplers._ga.BaseGASampler``) keep a
``threading.Lock`` that guards their generation cache and define no ``__getstate__``: every ``search.algorithm:
nsga2`` study failed as its Tuner started, with "cannot pickle '_thread.lock' object". Optuna's own storages
(``InMemoryStorage``, ``_CachedStorage``) and ``Study`` already leave their locks and thread-locals out of their
pickles; :class:`LocksLeftOutOfPickle` does the same for a sampler.

Its pickled state is the sampler's own, less every lock it holds; reading it back makes new, unlocked locks (a lock
guards this process's threads only: a copy has none yet). Seeds, random states and caches travel unchanged, so a
copy suggests what the original would have suggested next.
"""

from __future__ import annotations

import threading
from typing import Any

import optuna

__all__ = ["LocksLeftOutOfPickle", "NSGAIISampler", "TPESampler"]

_KINDS = {type(threading.Lock()): "lock", type(threading.RLock()): "rlock"}
_MAKE = {"lock": threading.Lock, "rlock": threading.RLock}
_LEFT_OUT = "_perftune_locks"  # in the pickled state: attribute → the kind of lock it held


class LocksLeftOutOfPickle:
    """Mix-in for a sampler: its pickle leaves out the locks among its attributes; reading it back makes new ones."""

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        locks = {name: kind for name, value in state.items() if (kind := _KINDS.get(type(value))) is not None}
        for name in locks:
            del state[name]
        state[_LEFT_OUT] = locks
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        locks = state.pop(_LEFT_OUT, {})
        self.__dict__.update(state)
        for name, kind in locks.items():
            setattr(self, name, _MAKE[kind]())


class NSGAIISampler(LocksLeftOutOfPickle, optuna.samplers.NSGAIISampler):
    """Optuna's NSGA-II (``search.algorithm: nsga2``), picklable at any moment. (Its name is Optuna's: the genetic
    samplers key the generation they store on each trial by their class name.)"""


class TPESampler(LocksLeftOutOfPickle, optuna.samplers.TPESampler):
    """Optuna's TPE (``search.algorithm: tpe``), picklable at any moment (it holds no lock today; if a later
    Optuna gives it one, the pickle still leaves it out)."""
