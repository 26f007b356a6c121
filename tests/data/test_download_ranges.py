"""`missing_ranges`: what is left of a request once the stored ranges are taken out."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from gridctl.data.download import missing_ranges

spans = st.tuples(st.integers(0, 60), st.integers(0, 60)).map(sorted).map(tuple)


@settings(max_examples=400)
@given(request=spans.filter(lambda r: r[0] < r[1]), covered=st.lists(spans, max_size=6))
def test_missing_is_exactly_the_uncovered_points(
    request: tuple[int, int], covered: list[tuple[int, int]]
) -> None:
    start, end = request
    gaps = missing_ranges(start, end, covered)
    # Exact check on the integer points of a small domain.
    uncovered = {t for t in range(start, end) if not any(a <= t < b for a, b in covered)}
    assert {t for a, b in gaps for t in range(a, b)} == uncovered
    # Sorted, non-empty, disjoint and not even touching (touching ranges would be one request, not two).
    assert all(a < b for a, b in gaps)
    assert all(b1 < a2 for (_, b1), (a2, _) in itertools.pairwise(gaps))


def test_examples() -> None:
    # Stored [10, 20) and [30, 40) inside a request for [0, 50): three holes.
    assert missing_ranges(0, 50, [(30, 40), (10, 20)]) == [(0, 10), (20, 30), (40, 50)]
    assert missing_ranges(0, 50, [(0, 50)]) == []
    assert missing_ranges(0, 50, []) == [(0, 50)]
    assert missing_ranges(5, 8, [(0, 6), (7, 100)]) == [(6, 7)]
    assert missing_ranges(0, 10, [(5, 5)]) == [(0, 10)]  # an empty stored range splits nothing
