"""Per-layer bit widths under a size budget: measure each layer's sensitivity, then choose.

Sensitivity. With every kernel at 8 bits (MSE steps, nearest rounding: `toolkit.ptq`), layer l
alone is put at b bits and the model's outputs on the calibration samples are compared with the
float model's:

    d(l, b) = mean (y_(l at b) - y_float)^2  -  mean (y_(all at 8) - y_float)^2

(the increase of the output error that layer l's b-bit weights cause, unlabeled).

Choice. The widths minimise the predicted damage sum_l d(l, b_l) subject to the weight bytes
sum_l bytes(l, b_l) <= budget: a multiple-choice knapsack, solved exactly by dynamic programming
over bytes. bytes(l, b) is what the .tflite stores: ceil(n_l / 2) for b <= 4 (int4-packed), n_l
for 8 (`storage="tflite"`); or n_l b / 8 rounded up (`storage="bits"`, for a runtime that packs
2 and 3 bits). With int4 packing 2 and 3 bits cost what 4 bits cost, so under a byte budget
the plan never picks them over 4 (they matter under `storage="bits"`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import numpy as np

from toolkit.errors import ConfigError
from toolkit.ptq import post_training_rounding, ptq_scheme
from toolkit.rewrite import quantize, quantized_layers
from toolkit.scheme import QuantScheme

__all__ = ["LayerChoice", "STORAGES", "choose_widths", "layer_bytes", "layer_sensitivities", "planned_scheme"]

STORAGES = ("tflite", "bits")


def layer_bytes(weights: int, bits: int, storage: str = "tflite") -> int:
    """The bytes `weights` kernel values take at `bits` (module docstring)."""
    if storage not in STORAGES:
        raise ConfigError(f"Expected storage in {STORAGES}. Received: {storage!r}")
    if storage == "tflite":
        return math.ceil(weights / 2) if bits <= 4 else weights
    return math.ceil(weights * bits / 8)


@dataclass(frozen=True)
class LayerChoice:
    layer: str
    weights: int
    bits: int
    sensitivity: float   # d(layer, bits)
    bytes: int


def _outputs(model, x, batch_size: int = 256) -> np.ndarray:
    return np.concatenate([np.asarray(model(x[i:i + batch_size], training=False)) for i in range(0, len(x), batch_size)])


def layer_sensitivities(float_model: keras.Model, x: np.ndarray, bits=(2, 3, 4, 8),
                        scheme: QuantScheme | None = None) -> dict[str, dict]:
    """{layer: {"weights": n, "sensitivity": {b: d(layer, b)}}} in graph order (module docstring).
    `scheme`: activation bits and which layers stay float (its weight bits are ignored)."""
    x = np.asarray(x, np.float32)
    base = scheme or QuantScheme()
    reference = _outputs(float_model, x)
    states = {}
    for width in sorted(set(bits) | {8}):
        keras.utils.set_random_seed(0)
        model = quantize(float_model, ptq_scheme(QuantScheme(**{**base.to_dict(), "weight_bits": width})),
                         calibration_data=x)
        post_training_rounding(float_model, model, x, "nearest")
        states[width] = {layer.name: (layer.float_kernel.numpy(), layer.weight_quantizer.step_variable.numpy())
                         for layer in quantized_layers(model)}
        if width == 8:
            eight = model
    baseline = float(np.mean((_outputs(eight, x) - reference) ** 2))
    result = {}
    for layer in quantized_layers(eight):
        kernel, step = states[8][layer.name]
        result[layer.name] = {"weights": int(kernel.size), "sensitivity": {}}
        for width in bits:
            layer.float_kernel.assign(states[width][layer.name][0])
            layer.weight_quantizer.step_variable.assign(states[width][layer.name][1])
            error = float(np.mean((_outputs(eight, x) - reference) ** 2))
            result[layer.name]["sensitivity"][width] = max(error - baseline, 0.0)
        layer.float_kernel.assign(kernel)
        layer.weight_quantizer.step_variable.assign(step)
    return result


def choose_widths(sensitivities: dict[str, dict], budget_bytes: int, storage: str = "tflite") -> list[LayerChoice]:
    """The widths with the least total sensitivity whose bytes fit `budget_bytes` (exact DP)."""
    layers = list(sensitivities)
    options = [[(bits, layer_bytes(sensitivities[name]["weights"], bits, storage), float(value))
                for bits, value in sorted(sensitivities[name]["sensitivity"].items())] for name in layers]
    smallest = sum(min(cost for _, cost, _ in choices) for choices in options)
    if budget_bytes < smallest:
        raise ConfigError(f"A budget of {budget_bytes} bytes is below the smallest plan ({smallest} bytes, every layer "
                          f"at its narrowest width).")
    budget = int(budget_bytes)
    best = np.zeros(budget + 1)          # least damage with at most j bytes, layers so far
    picks = []
    for choices in options:
        candidates = np.full((len(choices), budget + 1), np.inf)
        for index, (_, cost, damage) in enumerate(choices):
            if cost <= budget:
                candidates[index, cost:] = best[:budget + 1 - cost] + damage
        picks.append(np.argmin(candidates, axis=0).astype(np.int8))
        best = np.min(candidates, axis=0)
    plan, spare = [], budget
    for name, choices, pick in zip(reversed(layers), reversed(options), reversed(picks), strict=True):
        bits, cost, damage = choices[int(pick[spare])]
        plan.append(LayerChoice(name, sensitivities[name]["weights"], bits, damage, cost))
        spare -= cost
    return plan[::-1]


def planned_scheme(plan: list[LayerChoice], base: QuantScheme | None = None, learned_step=None) -> QuantScheme:
    """`base` (default W8A8) with one override per layer naming its chosen width (names matched
    in full, so regex characters in a name are escaped). `learned_step(bits) -> bool`, where
    given, also sets each layer's `learned_step` from its width (a training recipe's rule, such
    as `models.training.learned_step_for`: learned steps at 2 bits)."""
    import re

    base = base or QuantScheme()
    overrides = dict(base.overrides)
    for choice in plan:
        values = {"weight_bits": choice.bits}
        if learned_step is not None:
            values["learned_step"] = bool(learned_step(choice.bits))
        overrides[re.escape(choice.layer)] = {**overrides.get(re.escape(choice.layer), {}), **values}
    return QuantScheme(**{**base.to_dict(), "overrides": overrides})
