"""The seed of every test that trains or builds a random model: `SOFTEDGE_TEST_SEED` (default 0).

A trained model's integers differ between CPUs, so no test may assert a value that one trained
model happens to have. `.ci/run` runs the seeded tests a second time with SOFTEDGE_TEST_SEED=1:
an assertion that holds only for seed 0's model fails here before it fails on another machine.
"""

import os

__all__ = ["TEST_SEED", "seeded"]

TEST_SEED = int(os.environ.get("SOFTEDGE_TEST_SEED", "0"))


def seeded(offset: int = 0) -> int:
    """The seed a test uses where it used `offset` (distinct offsets stay distinct seeds)."""
    return 1000 * TEST_SEED + offset
