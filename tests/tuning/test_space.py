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
