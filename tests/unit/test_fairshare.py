"""Max-min fair shares: no loop, no clock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shoal.core.fairshare import fair_shares


def test_equal_demands_split_evenly() -> None:
    assert fair_shares(200, {"a": 500, "b": 500}) == {"a": 100, "b": 100}
    assert fair_shares(10, {"a": 10, "b": 10, "c": 10}) == {"a": 3, "b": 3, "c": 4}


def test_what_a_small_job_leaves_goes_to_the_others() -> None:
    assert fair_shares(100, {"a": 10, "b": 80, "c": 80}) == {"a": 10, "b": 45, "c": 45}
    assert fair_shares(100, {"a": 10, "b": 20}) == {"a": 10, "b": 20}  # below the budget
    assert fair_shares(100, {"a": 300}) == {"a": 100}
    assert fair_shares(100, {}) == {}


@given(st.integers(0, 2_000), st.lists(st.integers(0, 1_000), max_size=20))
def test_max_min_fair(capacity: int, wants: list[int]) -> None:
    demands = {i: w for i, w in enumerate(wants)}
    shares = fair_shares(capacity, demands)
    assert list(shares) == list(demands)
    assert sum(shares.values()) == min(capacity, sum(wants))
    held = [shares[i] for i in demands if shares[i] < demands[i]]
    for i, want in demands.items():
        assert 0 <= shares[i] <= want
        if held:  # nobody held back gets less than a satisfied job beyond one
            assert shares[i] == want or shares[i] >= max(held) - 1
    if held:
        assert max(held) - min(held) <= 1
        assert all(s <= max(held) for i, s in shares.items() if s == demands[i])
    if capacity >= len(wants):
        assert all(shares[i] >= 1 for i, w in demands.items() if w >= 1)
