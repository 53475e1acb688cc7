"""The mixed-precision benchmark's budgets and schemes, and the summary it reports."""

import pytest

from bench import mixed
from bench.ptq import summarize
from toolkit.plan import layer_bytes

# The MNIST-1D CNN's kernels: conv0 160 weights, conv1 and conv2 3,072, logits 3,200.
WEIGHTS = {"conv0": 160, "conv1": 3072, "conv2": 3072, "logits": 3200}


def sensitivities(damage_of):
    return {name: {"weights": n, "sensitivity": {b: damage_of(name, b) for b in (2, 3, 4, 8)}}
            for name, n in WEIGHTS.items()}


def test_a_whole_budget_is_the_uniform_schemes_bytes_counted_in_bits():
    weights = list(WEIGHTS.values())
    for bits in (2, 3, 4):
        assert mixed.budget_bytes(weights, bits) == sum(layer_bytes(n, bits, "bits") for n in weights)
    assert mixed.budget_bytes([3], 2.5) == 1   # ceil(7.5 / 8)


def test_every_plan_fits_its_budget_and_the_w2_budget_admits_only_uniform_w2():
    # conv0 (160 weights) is by far the most sensitive, as on MNIST-1D.
    schemes = mixed.schemes_for(sensitivities(lambda name, b: (8 - b) * (10.0 if name == "conv0" else 1.0)))
    assert [s["scheme"] for s in schemes[:4]] == ["uniform W2", "uniform W3", "uniform W4", "uniform W8"]
    plans = {s["scheme"]: s for s in schemes if s["kind"] == "planned"}
    assert len(plans) == len(mixed.BUDGETS)
    for plan in plans.values():
        spent = plan["weight_bytes_bits"] if plan["storage"] == "bits" else plan["weight_bytes_tflite"]
        assert spent <= plan["budget"]
    assert plans["plan 2 bits/weight (bits)"]["widths"] == [2, 2, 2, 2]
    assert plans["plan 2.25 bits/weight (bits)"]["widths"] == [8, 2, 2, 2]   # conv0's 120 extra bytes fit
    # In the .tflite 2, 3 and 4 bits all take half a byte: uniform W2's bytes buy uniform W4.
    assert plans["plan 4 bits/weight (tflite)"]["widths"] == [4, 4, 4, 4]
    assert plans["plan 4 bits/weight (tflite)"]["weight_bytes_tflite"] == 4752


def test_summary_groups_by_the_given_keys_with_mean_and_spread():
    rows = [{"scheme": "uniform W2", "method": "QAT", "accuracy": a, "bytes": 100, "seconds": 1.0} for a in (0.8, 0.9)]
    rows.append({"scheme": "uniform W2", "method": "PTQ adaround", "accuracy": 0.85, "bytes": 100, "seconds": 2.0})
    summary = summarize(rows, keys=("scheme", "method"))
    assert [(e["scheme"], e["method"], e["seeds"]) for e in summary] == [("uniform W2", "QAT", 2),
                                                                         ("uniform W2", "PTQ adaround", 1)]
    assert summary[0]["accuracy"] == pytest.approx(0.85) and (summary[0]["min"], summary[0]["max"]) == (0.8, 0.9)
