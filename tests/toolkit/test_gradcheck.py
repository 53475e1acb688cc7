import numpy as np
import pytest
import tensorflow as tf

import toolkit.gradcheck as gc
from toolkit import rounding


@pytest.mark.parametrize("method", ["ste", "hard"])
def test_gradcheck_passes_for_methods_without_alpha(method):
    result = gc.gradcheck(method)
    assert result.max_error_x < 1e-6
    assert result.max_error_alpha is None


@pytest.mark.parametrize("method", ["soft", "sigmoid"])
@pytest.mark.parametrize("alpha", [0.0, 1.0, 5.0, 20.0])
def test_gradcheck_passes_for_soft_methods(method, alpha):
    result = gc.gradcheck(method, alpha)
    assert result.max_error_x < 1e-6
    assert result.max_error_alpha < 1e-5


def test_gradcheck_catches_a_wrong_gradient(monkeypatch):
    # A "soft" method whose backward pass claims slope 1 (a straight-through gradient on a
    # soft forward): its surrogate is the curve, so the check must flag it.
    def wrong(x, alpha):
        return x + tf.stop_gradient(rounding.soft_round(x, alpha) - x)

    monkeypatch.setitem(rounding.METHODS, "soft", wrong)
    assert gc.gradcheck("soft", 5.0).max_error_x > 0.5


def test_gradcheck_table_covers_every_method_and_alpha():
    table = gc.gradcheck_table(alphas=(0.0, 2.0))
    assert [(r.method, r.alpha) for r in table] == [
        ("ste", None), ("soft", 0.0), ("soft", 2.0), ("sigmoid", 0.0), ("sigmoid", 2.0), ("hard", None),
    ]
    assert all(np.isfinite(r.max_error_x) for r in table)
