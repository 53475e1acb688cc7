"""LiteRT's ARM64 kernel families, pinned on the emulated CPUs (make test-slow, once `make arm64`
built the device; skipped with the reason where it is not).

On every CPU model QEMU emulates here (`app.arm64.CPUS`), LiteRT's aarch64 wheel runs a set of
probe models (the common Keras layers, softmax at several gains and widths, HARD_SWISH on random
grids, keep_dims MEAN in blocks of 16 channels and after them, softedge exports
at 2-8 bits and int4-weights, and 3x3 depthwise convolutions on both sides of LiteRT's
fast-kernel condition with multipliers above and below 1); every tensor it computes must equal
the integer reference's `builtin-arm64` (builtin kernels), the outputs its `xnnpack-arm64`
(the default path) and every tensor its portable `reference`. Each rule in which builtin-arm64
differs from x86-64's builtin is then shown to be needed: with x86-64's rule in its place, some
probe misses.
"""

from dataclasses import replace

import keras
import numpy as np
import pytest
from keras import layers as L

from app import arm64
from export.device.check import quantize_input
from export.device.families import KernelFamily
from export.device.reference import Graph, rules
from export.exactness import compare_with_family
from export.harden import harden
from export.tflite import convert
from tests.export.conftest import calibrated, common_layers, post_training_int8
from tests.helpers import with_tensor_grids
from tests.seeds import seeded

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not arm64.is_built(), reason="the ARM64 device is not built here (make arm64)")]



def _device_inputs(tflite_bytes: bytes, x: np.ndarray) -> np.ndarray:
    graph = Graph(tflite_bytes)
    return quantize_input(x, {"dtype": np.int8, "quantization": graph.tensors[graph.inputs[0]].grid()})


def _depthwise_probes(rng) -> dict:
    """3x3 depthwise convolutions: inside LiteRT's aarch64 fast-kernel condition (stride 1 and 2,
    padding 0 or 1, channels a multiple of 8) and outside it (12 channels, depth multiplier 2,
    a stride-2 SAME window past the input); each as calibrated and with its output scale divided
    until the largest real multiplier is 3 (exponents 1 and 2, where the kernels' left shift
    comes before or after the rounding)."""
    probes = {}
    for size, stride, padding, channels, multiplier in [(7, 1, "same", 8, 1), (8, 2, "same", 16, 1), (8, 1, "valid", 8, 1),
                                                        (7, 2, "valid", 8, 1), (7, 1, "same", 12, 1), (8, 1, "same", 8, 2)]:
        keras.utils.set_random_seed(seeded(size * stride + channels))
        inputs = keras.Input((size, size, channels))
        model = keras.Model(inputs, L.DepthwiseConv2D(3, strides=stride, padding=padding, depth_multiplier=multiplier)(inputs))
        x = rng.normal(size=(32, size, size, channels)).astype(np.float32)
        tflite_bytes = post_training_int8(model, x)
        name = f"depthwise_{size}_s{stride}_{padding}_c{channels}_m{multiplier}"
        probes[name] = (tflite_bytes, _device_inputs(tflite_bytes, x))
        graph = Graph(tflite_bytes)
        op = next(op for op in graph.ops if op.name == "DEPTHWISE_CONV_2D")
        output = graph.tensors[op.outputs[0]]
        largest = graph.tensors[op.inputs[0]].scale[0] * graph.tensors[op.inputs[1]].scale.max() / output.scale[0]
        scaled = with_tensor_grids(tflite_bytes, {output.index: (output.scale * float(largest) / 3.0, output.zero_point)})
        probes[name + "_exponent_above_0"] = (scaled, _device_inputs(scaled, x))
    return probes


def _softedge_probes() -> dict:
    from models import registry
    from toolkit import QuantScheme, quantize

    probes = {}
    for bits, target in [(8, "int8"), (3, "int8"), (2, "int8"), (4, "int4-weights")]:
        keras.utils.set_random_seed(seeded(bits))
        model = registry.build("digits_cnn", (8, 8, 1), 10)
        x = np.random.default_rng(bits).uniform(0, 1, size=(64, 8, 8, 1)).astype(np.float32)
        tflite_bytes = convert(harden(quantize(model, QuantScheme(weight_bits=bits), calibration_data=x)), target)
        probes[f"digits_cnn_w{bits}_{target}"] = (tflite_bytes, _device_inputs(tflite_bytes, x))
    for bits, target in [(2, "int8"), (4, "int4-weights")]:
        quantized, x = calibrated("conv1d", bits)
        tflite_bytes = convert(harden(quantized), target)
        probes[f"conv1d_w{bits}_{target}"] = (tflite_bytes, _device_inputs(tflite_bytes, x[:64]))
    return probes


@pytest.fixture(scope="module")
def probes() -> dict:
    return probe_models()


def probe_models() -> dict:
    """{name: (tflite bytes, device inputs)}: the probes of the module docstring."""
    rng = np.random.default_rng(seeded(7))
    models = {}
    for name in ["convolutions", "residual", "activations", "conv1d", "ds_cnn", "mobilenet", "reductions"]:
        model = common_layers(name)
        x = 1.5 * rng.normal(size=(48, *model.inputs[0].shape[1:])).astype(np.float32)
        tflite_bytes = post_training_int8(model, x)
        models[f"common_{name}"] = (tflite_bytes, _device_inputs(tflite_bytes, x))
    for gain, classes in [(1.0, 10), (40.0, 37), (3.0, 1000)]:
        keras.utils.set_random_seed(seeded(classes))
        model = keras.Sequential([keras.Input((6,)), L.Dense(classes, kernel_initializer=keras.initializers.RandomNormal(stddev=gain)),
                                  L.Softmax()])
        x = rng.normal(size=(200, 6)).astype(np.float32)
        tflite_bytes = post_training_int8(model, x)
        models[f"softmax_gain{gain:g}_classes{classes}"] = (tflite_bytes, _device_inputs(tflite_bytes, x))
    alone = post_training_int8(keras.Sequential([keras.Input((256,)), L.Activation("hard_swish")]),
                                rng.normal(size=(16, 256)).astype(np.float32))
    (op,) = Graph(alone).ops
    for trial in range(6):   # HARD_SWISH on random grids, every int8 input
        scales, zeros = np.exp(rng.uniform(np.log(0.004), np.log(0.3), size=2)), rng.integers(-128, 128, size=2)
        tflite_bytes = with_tensor_grids(alone, {op.inputs[0]: (scales[0], zeros[0]), op.outputs[0]: (scales[1], zeros[1])})
        models[f"hard_swish_{trial}"] = (tflite_bytes, np.arange(-128, 128, dtype=np.int8)[None])
    for channels in (6, 40):  # keep_dims MEAN: blocks of 16 channels with SIMD, the rest one by one
        pool = post_training_int8(keras.Sequential([keras.Input((2, 2, channels)), L.GlobalAveragePooling2D(keepdims=True)]),
                                   rng.normal(size=(16, 2, 2, channels)).astype(np.float32))
        (op,) = Graph(pool).ops
        tflite_bytes = with_tensor_grids(pool, {op.inputs[0]: (0.010938328690826893, -128), op.outputs[0]: (0.010445035062730312, -128)})
        models[f"mean_keep_dims_c{channels}"] = (tflite_bytes, rng.integers(-128, 128, size=(300, 2, 2, channels)).astype(np.int8))
    models.update(_depthwise_probes(rng))
    models.update(_softedge_probes())
    return models


_RUNS: dict = {}


def _runtime(probes: dict, kernels: str, cpu: str) -> dict:
    """LiteRT's tensors on the emulated `cpu` (one emulator start per CPU and kernels, cached)."""
    if (cpu, kernels) not in _RUNS:
        _RUNS[cpu, kernels] = arm64.run_tensors(probes, kernels, cpu)
    return _RUNS[cpu, kernels]


def _mismatches(probes: dict, runtime: dict, kernels: str, family_rules=None) -> dict:
    """{probe: mismatched elements (or the runtime's error)} of `runtime` against the reference
    family `kernels` computes on ARM64 (or `family_rules` put in that family's place)."""
    family = KernelFamily.computed_by(kernels, "aarch64")
    found = {}
    for name, (tflite_bytes, inputs) in probes.items():
        if isinstance(runtime[name], str):
            found[name] = runtime[name]
            continue
        graph = Graph(tflite_bytes)
        if family_rules is not None:
            saved = rules.RULES[family_rules.family]
            rules.RULES[family_rules.family] = family_rules
        try:
            found[name] = compare_with_family(graph, inputs, runtime[name], family)["mismatched_elements"]
        finally:
            if family_rules is not None:
                rules.RULES[family_rules.family] = saved
    return found


@pytest.mark.parametrize("cpu", list(arm64.CPUS))
@pytest.mark.parametrize("kernels", ["builtin", "xnnpack"])
def test_litert_on_every_emulated_arm64_cpu_computes_the_arm64_family(probes, cpu, kernels):
    found = _mismatches(probes, _runtime(probes, kernels, cpu), kernels)
    refused = {name: error for name, error in found.items() if isinstance(error, str)}
    assert not refused, refused
    assert all(count == 0 for count in found.values()), {name: count for name, count in found.items() if count}


@pytest.mark.parametrize("cpu", ["cortex-a53", "cortex-a76"])
def test_litert_reference_kernels_on_arm64_are_the_portable_family(probes, cpu):
    found = _mismatches(probes, _runtime(probes, "reference", cpu), "reference")
    # BUILTIN_REF has no int4 DEPTHWISE_CONV_2D (digits_cnn at int4-weights): refused on every ISA
    assert {name for name, count in found.items() if isinstance(count, str)} == {"digits_cnn_w4_int4-weights"}
    assert all(count == 0 for count in found.values() if not isinstance(count, str))


@pytest.mark.parametrize("field, kernels", [("conv_requantize", "builtin"), ("fc_requantize", "builtin"),
                                            ("depthwise_3x3_requantize", "builtin"), ("softmax", "builtin"),
                                            ("int4_convs_run_as", "xnnpack"), ("softmax", "xnnpack")])
def test_each_rule_in_which_arm64_differs_from_x86_is_needed(probes, field, kernels):
    """With x86-64's rule in the ARM64 family's place, some probe misses on the device."""
    arm, x86 = rules.rules_of(KernelFamily.computed_by(kernels, "aarch64")), rules.rules_of(kernels)
    x86_rule = getattr(x86, field)   # int4_convs_run_as: x86's XNNPACK hands them to x86's builtin
    assert getattr(arm, field) != x86_rule
    found = _mismatches(probes, _runtime(probes, kernels, "cortex-a53"), kernels, replace(arm, **{field: x86_rule}))
    assert sum(count for count in found.values() if not isinstance(count, str)) > 0
