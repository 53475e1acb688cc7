"""Bit allocation: sensitivities, the exact knapsack choice, the scheme it writes."""

import dataclasses
import itertools

import keras
import numpy as np
import pytest

from tests.seeds import seeded
from tests.toolkit.conftest import randomize_batch_norms, small_model
from toolkit import QuantScheme
from toolkit.errors import ConfigError
from toolkit.plan import (
    LayerChoice,
    choose_widths,
    layer_bytes,
    layer_sensitivities,
    planned_scheme,
)


def test_layer_bytes_pack_four_bits_and_below_into_half_bytes_as_tflite_does():
    assert [layer_bytes(101, b) for b in (2, 3, 4, 8)] == [51, 51, 51, 101]
    assert [layer_bytes(101, b, "bits") for b in (2, 3, 4, 8)] == [26, 38, 51, 101]
    with pytest.raises(ConfigError, match="storage"):
        layer_bytes(1, 4, "nibbles")


def test_the_choice_is_the_least_damage_that_fits_checked_against_every_combination():
    rng = np.random.default_rng(0)
    sensitivities = {f"l{i}": {"weights": int(rng.integers(50, 400)),
                               "sensitivity": {2: float(rng.uniform(1, 5)), 3: float(rng.uniform(0.3, 1)),
                                               4: float(rng.uniform(0.05, 0.3)), 8: 0.0}} for i in range(4)}
    for budget in (400, 550, 700, 900):
        plan = choose_widths(sensitivities, budget, storage="bits")
        assert sum(choice.bytes for choice in plan) <= budget
        best = min(sum(sensitivities[name]["sensitivity"][bits] for name, bits in zip(sensitivities, combo, strict=True))
                   for combo in itertools.product((2, 3, 4, 8), repeat=4)
                   if sum(layer_bytes(sensitivities[n]["weights"], b, "bits") for n, b in zip(sensitivities, combo, strict=True)) <= budget)
        assert sum(choice.sensitivity for choice in plan) == pytest.approx(best)
    with pytest.raises(ConfigError, match="below the smallest plan"):
        choose_widths(sensitivities, 10, storage="bits")


def test_sensitivities_shrink_with_width_and_the_scheme_names_each_layer():
    keras.utils.set_random_seed(seeded(0))
    model = small_model("conv1d")
    randomize_batch_norms(model)
    x = np.random.default_rng(1).normal(size=(64, 16, 2)).astype(np.float32)
    sensitivities = layer_sensitivities(model, x, bits=(2, 4, 8))
    assert list(sensitivities) == ["conv", "skip", "logits"]
    for entry in sensitivities.values():
        values = entry["sensitivity"]
        assert values[2] > values[4] >= 0 and values[8] == pytest.approx(0, abs=1e-6)
    plan = choose_widths(sensitivities, budget_bytes=sum(e["weights"] for e in sensitivities.values()))  # int8 fits
    assert all(choice.bits == 8 for choice in plan)
    tight = choose_widths(sensitivities, budget_bytes=150)
    assert any(choice.bits == 4 for choice in tight) and sum(choice.bytes for choice in tight) <= 150
    scheme = planned_scheme(tight, QuantScheme(activation_bits=8))
    assert {name: scheme.for_layer(name).weight_bits for name in sensitivities} == {c.layer: c.bits for c in tight}
    assert QuantScheme.from_json(scheme.to_json()) == scheme
    assert not any(scheme.for_layer(name).learned_step for name in sensitivities)


def test_planned_scheme_sets_each_layers_step_rule_from_its_width():
    plan = [LayerChoice("conv.0", 10, 2, 1.0, 3), LayerChoice("logits", 10, 8, 0.0, 10)]
    scheme = planned_scheme(plan, learned_step=lambda bits: bits <= 2)
    assert scheme.for_layer("conv.0") == dataclasses.replace(scheme.for_layer("conv.0"), weight_bits=2, learned_step=True)
    assert scheme.for_layer("logits").weight_bits == 8 and not scheme.for_layer("logits").learned_step
    assert scheme.for_layer("conv00").weight_bits == 8   # the name is escaped: "." is not a wildcard
