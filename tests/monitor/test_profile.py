"""Window summaries count exactly what one binary search per value would, whatever the chunking."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from perftune.monitor.profile import ColumnProfile, ColumnSummary


def summarize(reference: ColumnProfile, current: np.ndarray, chunks: int) -> ColumnSummary:
    window = ColumnSummary(reference)
    for part in np.array_split(current, chunks):
        window.add(part)
    return window


@pytest.mark.parametrize("reference_rows", [300, 5000])  # values kept whole (KS counts), and not
def test_bin_counts_sums_and_ks_counts_equal_a_per_value_search_with_ties_on_the_edges(reference_rows):
    rng = np.random.default_rng(11)
    reference_values = rng.poisson(4, reference_rows).astype(float)  # duplicate percentile edges
    reference = ColumnProfile.build("x", reference_values)
    current = np.concatenate([rng.poisson(5, 4000).astype(float), rng.normal(4, 3, 1000), [np.nan, np.inf]])
    rng.shuffle(current)
    window = summarize(reference, current, chunks=7)

    present = current[np.isfinite(current)]
    index = np.searchsorted(reference.edges, present, side="left")  # bin i is (e[i-1], e[i]]
    assert window.counts.tolist() == np.bincount(index, minlength=len(reference.counts)).tolist()
    np.testing.assert_allclose(window.sums, np.bincount(index, weights=present, minlength=len(reference.counts)))
    assert (window.count, window.missing) == (present.size, 2)
    assert window.below == np.count_nonzero(present < reference.min)
    assert window.above == np.count_nonzero(present > reference.max)
    if reference.values is not None:
        values = np.unique(reference.values)
        assert window.equal.tolist() == [np.count_nonzero(present == v) for v in values]
        bounds = np.concatenate([[-np.inf], values, [np.inf]])
        strictly_between = [np.count_nonzero((present > lo) & (present < hi)) for lo, hi in pairwise(bounds)]
        assert window.between.tolist() == strictly_between


def test_categorical_frequencies_and_unseen_values_do_not_depend_on_the_chunking():
    rng = np.random.default_rng(12)
    reference = ColumnProfile.build("c", rng.choice([1.0, 2.0, 4.0], 2000))
    current = rng.choice([1.0, 2.0, 3.0, 4.0], 3000)
    one, many = summarize(reference, current, chunks=1), summarize(reference, current, chunks=11)
    expected = [np.count_nonzero(current == v) for v in (1.0, 2.0, 4.0)]
    assert one.frequencies.tolist() == many.frequencies.tolist() == expected
    assert one.unseen == many.unseen == np.count_nonzero(current == 3.0)
