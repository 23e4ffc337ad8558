"""Max-min fair shares of a fetch budget among jobs (pure: the service's scheduler)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

K = TypeVar("K")


def fair_shares(capacity: int, demands: Mapping[K, int]) -> dict[K, int]:
    """Split ``capacity`` among ``demands`` by max-min fairness (water filling).

    Each gets ``min(demand, fair share)``; what a small demand leaves goes to the larger
    ones, so the total is ``min(capacity, sum of demands)``. Shares are whole numbers that
    differ by at most one among those held back; a demand of at least 1 gets at least 1
    while ``capacity`` covers one each. Equal demands are served in ``demands``' order,
    the later ones taking the rounding.
    """
    shares: dict[K, int] = {}
    left = max(0, capacity)
    ordered = sorted(demands.items(), key=lambda kv: kv[1])  # stable: ties keep their order
    for i, (key, want) in enumerate(ordered):
        give = min(max(0, want), left // (len(ordered) - i))
        shares[key] = give
        left -= give
    return {key: shares[key] for key in demands}
