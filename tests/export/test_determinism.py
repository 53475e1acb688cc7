"""The same seed gives the same numbers (every command takes --seed)."""

import json

import numpy as np

from app.runs import RunConfig, train_run
from export.artifacts import load_keras_model
from models.training import Recipe
from tests.seeds import seeded
from toolkit import QuantScheme


def test_train_run_is_reproducible_for_a_seed_and_varies_across_seeds(tmp_path):
    def run(name, seed):
        config = RunConfig("digits_cnn", "digits", QuantScheme(weight_bits=4), Recipe(float_epochs=1, qat_epochs=1), seed)
        train_run(config, tmp_path / name)
        return load_keras_model(tmp_path / name / "smooth.keras").get_weights()

    first, again, other = run("a", seeded(3)), run("b", seeded(3)), run("c", seeded(4))
    assert all(np.array_equal(x, y) for x, y in zip(first, again, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(first, other, strict=True))
    assert json.loads((tmp_path / "a" / "config.json").read_text())["seed"] == seeded(3)
