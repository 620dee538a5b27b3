"""How far ``mix`` spreads one coordinate of z_T (faceanon/secure/transforms.py, MIX_ROUNDS).

    python benchmarks/mix_spread.py

A unit vector on one of 3,601 coordinates (a face mask's size on the 64 x 64 grid, one
channel's worth) is mixed with five keys at 16, 32 and 48 rounds; printed: the largest share of
its amplitude left on any one coordinate (max |component|), beside the same for a uniformly
random rotation (a Haar-random unit vector of that size), which mixing cannot beat.
"""

from __future__ import annotations

import numpy as np

from faceanon.secure import transforms
from faceanon.secure.keys import SecretKey

COUNT = 3601


def main() -> None:
    rng = np.random.default_rng(0)
    random = [np.abs(v / np.linalg.norm(v)).max() for v in rng.standard_normal((5, COUNT))]
    print(f"random rotation: max |component| {min(random):.3f}-{max(random):.3f}")
    base = transforms.MIX_ROUNDS
    try:
        for rounds in (16, 32, 48):
            transforms.MIX_ROUNDS = rounds
            spread = []
            for i in range(5):
                plan = transforms.mixing_plan(SecretKey(bytes([i]) * 16), bytes(16), 0, COUNT)
                unit = np.zeros(COUNT)
                unit[int(rng.integers(COUNT))] = 1.0
                spread.append(np.abs(plan.apply(unit)).max())
            print(f"{rounds} rounds: max |component| {min(spread):.3f}-{max(spread):.3f}")
    finally:
        transforms.MIX_ROUNDS = base


if __name__ == "__main__":
    main()
