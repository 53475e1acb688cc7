"""Functional check: MNIST-1D CNN, W4A8 with soft rounding annealed to hard, vs its float accuracy."""

import pytest

from models import datasets, registry
from models.training import Recipe, accuracy, train_float, train_quantized
from tests.seeds import seeded
from toolkit import QuantScheme
from toolkit.rounding import HARD_ALPHA
from toolkit.schedules import set_alpha

pytestmark = pytest.mark.slow   # 40 s of training; make test stays under 15 minutes


def test_w4a8_soft_rounding_trains_to_within_two_points_of_float():
    data = datasets.load("mnist1d")
    recipe = Recipe(float_epochs=30, qat_epochs=10)
    model = registry.build("mnist1d_cnn", data.input_shape, data.num_classes)
    train_float(model, data, recipe, seed=seeded(0))
    float_accuracy = accuracy(model, data.x_test, data.y_test)
    assert float_accuracy > 0.85  # the float model itself learned the task
    quantized, history = train_quantized(model, data, QuantScheme(weight_bits=4, rounding="soft"), recipe, seed=seeded(0))
    assert history["alpha"][-1] == recipe.alpha_end
    set_alpha(quantized, HARD_ALPHA)  # judge the hard-rounded model, the one that ships
    assert accuracy(quantized, data.x_test, data.y_test) >= float_accuracy - 0.02
