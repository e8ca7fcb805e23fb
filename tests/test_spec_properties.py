"""Property-based tests of the spec parser: whatever a user writes, perftune answers with a checked spec or
one line that says what is wrong — never a traceback."""

from __future__ import annotations

import copy

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from perftune.errors import PerftuneError
from perftune.spec import parse_spec
from perftune.tuning.plan import make_plan

VALID = {
    "name": "prop",
    "datasets": ["diabetes"],
    "models": ["sgd_logistic"],
    "search": {
        "algorithm": "grid",
        "space": {"batch_size": {"powers_of_two": {"from": 1, "until": "n_samples"}}, "learning_rate": [0.01]},
    },
    "objectives": [{"metric": {"classification": "accuracy", "regression": "rmse"}}, "train_time_s"],
    "constraints": ["train_time_s <= 5", {"metric": "memory_mb", "op": "<=", "bound": 512}],
    "gate": ["accuracy >= 0.5"],
    "early_stopping": {"policy": "projected", "min_observations": 2},
    "evaluation": {"test_fraction": 0.3, "eval_every": 50},
    "execution": {"cpus_per_trial": 1},
}

NAMES = st.sampled_from(
    ["name", "datasets", "models", "search", "space", "objectives", "constraints", "metric", "bound", "op",
     "policy", "batch_size", "epochs", "powers_of_two", "from", "until", "uniform", "loguniform", "randint",
     "algorithm", "scheduler", "task", "path", "source", "sample", "predictor", "train_on", "x", "ü ✓", ""]
)  # fmt: skip
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["n_samples", "grid", "tpe", "sgd_linear", "diabetes", "accuracy", "train_time_s <= 1", "<="])
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(NAMES | st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


def paths(node, prefix=()):
    """Every location in a nested spec (dict keys and list indices)."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from paths(value, (*prefix, i))


def replaced(spec: dict, path: tuple, value) -> dict:
    out = copy.deepcopy(spec)
    if not path:
        return value
    node = out
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return out


def answers_in_one_line(text: str) -> None:
    """Parse and plan ``text``: a checked plan, or a PerftuneError of one line."""
    try:
        make_plan(parse_spec(text))
    except PerftuneError as exc:
        message = str(exc)
        assert message and "\n" not in message, message
        assert "Traceback" not in message


ALL_PATHS = list(paths(VALID))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(ALL_PATHS), VALUES)
def test_any_value_anywhere_gives_a_plan_or_one_line(path, value):
    answers_in_one_line(yaml.safe_dump(replaced(VALID, path, value), allow_unicode=True))


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([p for p in ALL_PATHS if p]), NAMES | st.text(max_size=8), VALUES)
@example(("search", "space", "batch_size"), "\n", [])  # found in CI: a line break as a key, echoed raw
@example(("search", "space", "batch_size"), "\n", 1)
def test_any_extra_key_gives_a_plan_or_one_line(path, key, value):
    parent = path[:-1]
    node = VALID
    for part in parent:
        node = node[part]
    if not isinstance(node, dict):
        return
    answers_in_one_line(yaml.safe_dump(replaced(VALID, (*parent, key), value), allow_unicode=True))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_gives_a_plan_or_one_line(text):
    answers_in_one_line(text)
