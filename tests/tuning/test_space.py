from __future__ import annotations

from perftune.spec import PowersOfTen, PowersOfTwo, Range, Values
from perftune.tuning.space import grid_size, resolve, resolve_space, to_ray


def test_powers_of_two_until_the_training_rows():
    assert resolve(PowersOfTwo(1, "n_samples"), 430).values == (2, 4, 8, 16, 32, 64, 128, 256)
    assert resolve(PowersOfTwo(0, 8), 10_000).values == (1, 2, 4, 8)


def test_powers_of_ten_are_exact_floats():
    assert resolve(PowersOfTen(-4, -1), 0).values == (1e-4, 1e-3, 1e-2, 1e-1)


def test_thesis_grid_size_and_ray_space():
    space = resolve_space(
        {
            "batch_size": PowersOfTwo(1, "n_samples"),
            "learning_rate": PowersOfTen(-4, -1),
            "alpha": Values((1e-4, 1e-3, 1e-2)),
            "epochs": Values((5,)),
        },
        430,
    )
    assert grid_size(space) == 8 * 4 * 3
    ray_space = to_ray(space, "grid")
    assert ray_space["epochs"] == 5
    assert ray_space["batch_size"] == {"grid_search": [2, 4, 8, 16, 32, 64, 128, 256]}


def test_random_search_samples_ranges():
    ray_space = to_ray({"alpha": Range(1e-5, 1e-1, log=True), "batch_size": Values((8, 16))}, "random")
    assert 1e-5 <= ray_space["alpha"].sample() <= 1e-1
    assert ray_space["batch_size"].sample() in (8, 16)


def test_points_warm_start_a_search_and_narrow_a_grid():
    import pytest

    from perftune.errors import SpecError
    from perftune.results import Objective
    from perftune.spec import SearchSpec
    from perftune.tuning.search import build_search

    raw = {"batch_size": [8, 16, 32], "learning_rate": [0.001, 0.01], "epochs": 3}
    points = [{"batch_size": 16, "learning_rate": 0.01}, {"batch_size": 8, "learning_rate": 0.001}]
    objectives = [Objective("accuracy", "max")]
    grid = SearchSpec(algorithm="grid", space=raw, points=points)
    setup = build_search(grid, resolve_space(grid.space, 100), objectives, "classification", seed=0)
    assert setup.expected_trials == setup.num_samples == 2  # the grid is exactly the points
    tpe = SearchSpec(algorithm="tpe", num_samples=5, space=raw, points=points)
    setup = build_search(tpe, resolve_space(tpe.space, 100), objectives, "classification", seed=0)
    assert setup.num_samples == 5 and setup.searcher._points_to_evaluate == points
    with pytest.raises(SpecError, match=r"search.points\[0\] does not set learning_rate"):
        partial = SearchSpec(algorithm="grid", space=raw, points=[{"batch_size": 8}])
        build_search(partial, resolve_space(partial.space, 100), objectives, "classification", seed=0)
    with pytest.raises(ValueError, match=r"points\[0\] sets alpha, which the space does not have"):
        SearchSpec(algorithm="grid", space=raw, points=[{"alpha": 0.1}])


def test_points_are_fitted_to_the_resolved_space():
    from perftune.results import Objective
    from perftune.spec import SearchSpec, load_spec
    from perftune.tuning.search import build_search, fitting_points

    raw = {"batch_size": {"powers_of_two": {"from": 3, "until": "n_samples"}}, "learning_rate": [0.001, 0.01],
           "epochs": 3}  # fmt: skip
    points = [{"batch_size": 16, "learning_rate": 0.01, "epochs": 3}, {"batch_size": 512, "learning_rate": 0.01}]
    space = resolve_space(SearchSpec(space=raw).space, 100)  # batch sizes 8..64 on 100 rows
    assert fitting_points(points, space) == [{"batch_size": 16, "learning_rate": 0.01}]  # epochs is a constant
    tpe = SearchSpec(algorithm="tpe", num_samples=4, space=raw, points=points)
    setup = build_search(tpe, space, [Objective("accuracy", "max")], "classification", seed=0)
    assert setup.searcher.suggest("t0") == {"batch_size": 16, "learning_rate": 0.01}  # Optuna accepts the point
    assert setup.constants == {"epochs": 3}
    # a spec without points keeps the fingerprint it had before points existed (so old studies still resume)
    assert load_spec("examples/quick.yaml").fingerprint().startswith("6e588b7ee4c6")
