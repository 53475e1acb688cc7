"""The integer reference against LiteRT, tensor by tensor, for every kernel family."""

from pathlib import Path

import keras
import numpy as np
import pytest

from export.device.reference import (
    KERNEL_FAMILIES,
    Graph,
    KernelFamily,
    UnsupportedOpError,
    probed_families,
)
from export.device.reference import fixed_point as fp
from export.exactness import compare_families
from export.harden import harden
from export.tflite import convert
from tests.export.conftest import calibrated, common_layers, post_training_int8
from tests.seeds import seeded

L = keras.layers


# ---------------------------------------------------------------- fixed point, hand-computed

@pytest.mark.parametrize("real, expected", [
    (0.5, (1 << 30, 0)), (0.75, (1610612736, 0)), (1.0, (1 << 30, 1)), (0.25, (1 << 30, -1)),
    (1e-40, (0, 0)), (0.0, (0, 0)),
])
def test_quantize_multiplier(real, expected):
    assert fp.quantize_multiplier(real) == expected


def test_rounding_divide_by_pot_rounds_ties_away_from_zero():
    x = np.array([3, -3, 5, -5, 6, -6, 7, -7])
    np.testing.assert_array_equal(fp.rounding_divide_by_pot(x, 1), [2, -2, 3, -3, 3, -3, 4, -4])
    np.testing.assert_array_equal(fp.rounding_divide_by_pot(x, 2), [1, -1, 1, -1, 2, -2, 2, -2])


def test_the_three_roundings_differ_exactly_at_ties():
    multiplier, shift = fp.quantize_multiplier(0.25)  # M = 2^30, e = -1: the ties fall in the shift
    acc = np.array([-6, -2, 2, 6])                     # -1.5, -0.5, 0.5, 1.5
    np.testing.assert_array_equal(fp.multiply_by_quantized_multiplier(acc, multiplier, shift), [-2, -1, 1, 2])
    np.testing.assert_array_equal(fp.multiply_by_quantized_multiplier_upward(acc, multiplier, shift), [-1, 0, 1, 2])
    np.testing.assert_array_equal(fp.multiply_by_quantized_multiplier_single(acc, multiplier, shift), [-1, 0, 1, 2])
    np.testing.assert_array_equal(np.rint(acc.astype(np.float32) * np.float32(0.25)), [-2, -0, 0, 2])
    # gemmlowp's high multiply alone rounds a tie toward +infinity: -3 * 2^30 / 2^31 = -1.5 -> -1
    assert int(fp.saturating_rounding_doubling_high_mul(-3, 1 << 30)) == -1


def test_fixed_point_is_within_one_of_the_real_product():
    rng = np.random.default_rng(0)
    acc = rng.integers(-(1 << 20), 1 << 20, size=10000)
    for real in (0.0013, 0.37, 0.999, 3.7):
        multiplier, shift = fp.quantize_multiplier(real)
        for function in (fp.multiply_by_quantized_multiplier, fp.multiply_by_quantized_multiplier_upward,
                         fp.multiply_by_quantized_multiplier_single):
            assert np.max(np.abs(function(acc, multiplier, shift) - acc * real)) <= 1.0


def test_gemmlowp_exp_and_reciprocal_are_close_to_the_real_functions():
    from export.device.reference import gemmlowp

    real = -np.linspace(0, 31.9, 5000)                          # 5 integer bits, as softmax uses
    raw = np.round(real * 2.0 ** 26).astype(np.int64)
    exp = gemmlowp.exp_on_negative_values(raw, 5) / 2.0 ** 31
    assert np.max(np.abs(exp - np.exp(raw / 2.0 ** 26))) < 5e-7   # 4th-order Taylor on [-1/4, 0)
    assert int(gemmlowp.exp_on_negative_values(0, 5)) == (1 << 31) - 1   # exp(0) is One
    fraction = np.linspace(0, 0.999, 1000)
    one_over = gemmlowp.one_over_one_plus_x_for_x_in_0_1(np.round(fraction * 2.0 ** 31)) / 2.0 ** 31
    assert np.max(np.abs(one_over - 1 / (1 + fraction))) < 1e-8
    sums = np.array([1 << 19, 3 << 19, 123456789])              # 12 integer bits: 1.0, 3.0, ~29.4
    reciprocal, bits_over_unit = gemmlowp.get_reciprocal(sums, 12)
    np.testing.assert_allclose(reciprocal / 2.0 ** 31 / 2.0 ** bits_over_unit, 2.0 ** 19 / sums, rtol=1e-8)
    assert int(gemmlowp.srdhm(-(1 << 31), -(1 << 31))) == (1 << 31) - 1  # the one saturating product


def test_each_machine_claims_one_probed_family_per_kernel_selection():
    x86 = ("reference", "builtin", "xnnpack")
    arm64 = ("reference", "builtin-arm64", "xnnpack-arm64")
    assert probed_families("x86_64") == x86 and probed_families("AMD64") == x86
    assert probed_families("aarch64") == arm64
    for machine in ("riscv64", "arm64"):   # never probed: RISC-V, and macOS's LiteRT build on Apple silicon
        assert probed_families(machine) == ("reference",)
    assert set(KERNEL_FAMILIES) == set(x86) | set(arm64)
    for machine, families in (("x86_64", x86), ("aarch64", arm64)):
        assert [KernelFamily.computed_by(kernels, machine) for kernels in KernelFamily.kernel_names()] == list(families)
    assert KernelFamily.computed_by("builtin", "riscv64") is None


def test_activation_bounds():
    assert fp.activation_bounds("RELU6", 6 / 255, -128) == (-128, 127)
    assert fp.activation_bounds("RELU", 0.1, -20) == (-20, 127)
    assert fp.activation_bounds("NONE", 0.1, 3) == (-128, 127)


# ---------------------------------------------------------------- converter output of common layers

def _assert_exact(comparisons: dict, families=KERNEL_FAMILIES):
    """Every family exact, of those whose rules were probed on this machine's ISA."""
    for family in [f for f in families if f in probed_families()]:
        row = comparisons[family]
        assert row.get("runtime_error") is None, (family, row)
        assert row["mismatched_elements"] == 0 and row["outputs_equal"], (family, row)
        assert row["tensors_compared"] >= 1


@pytest.mark.parametrize("io", ["int8", "float"])
def test_reference_equals_litert_on_common_layers(common_model, io):
    name, model, x = common_model
    tflite_bytes = post_training_int8(model, x, io)
    graph = Graph(tflite_bytes)
    inputs = x if io == "float" else np.clip(np.floor(x / graph.tensors[graph.inputs[0]].scale[0] + 0.5)
                                             + graph.tensors[graph.inputs[0]].zero_point[0], -128, 127).astype(np.int8)
    comparisons, _ = compare_families(tflite_bytes, inputs, graph=graph)
    _assert_exact(comparisons)


@pytest.mark.parametrize("samples", [1, 2, 3, 7, 16])
def test_builtin_dequantize_rounds_its_last_partial_block_of_8_elements_apart(samples):
    # 5 float outputs per sample: 5, 10, 15, 35 and 80 elements, tails of 5, 2, 7, 3 and 0 after the
    # blocks of 8 (the whole tensor, batch included, is one buffer).
    # The SIMD rule q s - z s on every element misses some tail elements (3 of these 5 cases fail with it).
    keras.utils.set_random_seed(seeded(0))
    model = keras.Sequential([keras.Input((12,)), L.Dense(16, activation="relu"), L.Dense(5)])
    x = 2.0 * np.random.default_rng(seeded(1)).normal(size=(256, 12)).astype(np.float32)
    comparisons, _ = compare_families(post_training_int8(model, x, "float"), x[:samples], families=("builtin",))
    _assert_exact(comparisons, ("builtin",))


def _softedge_model(kind: str, bits: int):
    """A calibrated softedge model: the tests' small Conv1D model (ADD, MAX_POOL) or digits_cnn."""
    if kind == "conv1d":
        return calibrated(kind, bits)
    from models import registry
    from toolkit import QuantScheme, quantize

    keras.utils.set_random_seed(seeded(bits))
    model = registry.build("digits_cnn", (8, 8, 1), 10)
    x = np.random.default_rng(bits).uniform(0, 1, size=(128, 8, 8, 1)).astype(np.float32)
    return quantize(model, QuantScheme(weight_bits=bits), calibration_data=x), x


@pytest.mark.parametrize("kind, bits, target", [("digits_cnn", 8, "int8"), ("digits_cnn", 3, "int8"), ("conv1d", 2, "int8"),
                                                ("conv1d", 4, "int4-weights"), ("digits_cnn", 2, "int4-weights")])
def test_reference_equals_litert_on_softedge_exports(kind, bits, target):
    from export.device.check import quantize_input

    quantized, x = _softedge_model(kind, bits)
    tflite_bytes = convert(harden(quantized), target)
    graph = Graph(tflite_bytes)
    inputs = quantize_input(x, {"dtype": np.int8, "quantization": graph.tensors[graph.inputs[0]].grid()})
    comparisons, _ = compare_families(tflite_bytes, inputs, graph=graph)
    if target == "int4-weights" and kind == "digits_cnn":  # BUILTIN_REF has no int4 DEPTHWISE_CONV_2D
        assert "DEPTHWISE_CONV_2D" in comparisons["reference"]["runtime_error"]
        _assert_exact(comparisons, ("builtin", "xnnpack"))
    else:
        _assert_exact(comparisons)


def test_an_op_the_reference_lacks_is_named_with_its_tensor():
    keras.utils.set_random_seed(seeded(0))
    model = keras.Sequential([keras.Input((6,)), L.Dense(4), L.LeakyReLU(0.2, name="leaky")])
    x = np.random.default_rng(0).normal(size=(32, 6)).astype(np.float32)
    graph = Graph(post_training_int8(model, x))
    with pytest.raises(UnsupportedOpError, match=r"op 1 LEAKY_RELU \(output tensor '.+'\) is not executed"):
        graph.run(np.zeros((2, 6), np.int8), "builtin")
    with pytest.raises(ValueError, match="Unknown kernel family 'gpu'"):
        graph.run(np.zeros((2, 6), np.int8), "gpu")


def _exact_post_training_int8(model: keras.Model, x: np.ndarray):
    """Post-training int8 of `model`, run on `x` by LiteRT and the reference: asserts every family
    exact; returns (graph, the reference's values per family)."""
    tflite_bytes = post_training_int8(model, x)
    graph = Graph(tflite_bytes)
    scale, zero_point = graph.tensors[graph.inputs[0]].grid()
    inputs = np.clip(np.round(x / scale) + zero_point, -128, 127).astype(np.int8)
    comparisons, values = compare_families(tflite_bytes, inputs, graph=graph)
    _assert_exact(comparisons)
    return graph, values


@pytest.mark.parametrize("gain, classes", [(1.0, 10), (40.0, 37), (3.0, 1000)])
def test_softmax_equals_litert_in_every_family(gain, classes):
    # gain 40: logit differences beyond the fixed-point kernel's diff_min (those give exactly -128);
    # 1000 classes: a long float32 sum in the builtin kernel, summed in order.
    keras.utils.set_random_seed(seeded(0))
    model = keras.Sequential([keras.Input((6,)), L.Dense(classes, kernel_initializer=keras.initializers.RandomNormal(stddev=gain)),
                              L.Softmax()])
    x = np.random.default_rng(0).normal(size=(1000, 6)).astype(np.float32)
    graph, values = _exact_post_training_int8(model, x)
    softmax = graph.ops[-1]
    assert softmax.name == "SOFTMAX"
    # fixed point (reference) and float table (builtin) round differently: the families are told apart
    assert np.sum(values["reference"][softmax.outputs[0]] != values["builtin"][softmax.outputs[0]]) > 0


def test_the_reference_catches_a_wrong_rounding(monkeypatch):
    # The known-wrong variant: builtin kernels requantizing with TFLite's reference double rounding.
    from dataclasses import replace

    from export.device.reference import rules

    model = common_layers("convolutions")
    x = 1.5 * np.random.default_rng(1).normal(size=(200, 12, 12, 3)).astype(np.float32)
    tflite_bytes = post_training_int8(model, x, "float")
    builtin = rules.RULES[rules.KernelFamily.BUILTIN]
    monkeypatch.setitem(rules.RULES, rules.KernelFamily.BUILTIN, replace(builtin, conv_requantize="double"))
    comparisons, _ = compare_families(tflite_bytes, x, families=("builtin",))
    assert comparisons["builtin"]["mismatched_elements"] > 0
    assert comparisons["builtin"]["first_mismatch"]["op"].endswith(("CONV_2D", "DEPTHWISE_CONV_2D"))


def test_float_inputs_on_exact_ties_quantize_as_each_family_rounds():
    # x / s exactly k + 1/2: the reference rounds ties away from zero, builtin and XNNPACK
    # multiply by 1/s and round to even (a random input hits such a tie about once in 10^5).
    model = common_layers("ds_cnn")
    x = np.random.default_rng(1).normal(size=(64, 49, 10, 1)).astype(np.float32)
    tflite_bytes = post_training_int8(model, x, "float")
    graph = Graph(tflite_bytes)
    scale = np.float32(graph.tensors[graph.ops[0].outputs[0]].scale[0])
    ties = ((np.arange(-100, 100).astype(np.float32) + np.float32(0.5)) * scale).astype(np.float32)
    inputs = np.resize(ties, x.size).reshape(x.shape).astype(np.float32)
    comparisons, values = compare_families(tflite_bytes, inputs, graph=graph)
    _assert_exact(comparisons)
    quantized = graph.ops[0].outputs[0]
    assert np.sum(values["reference"][quantized] != values["builtin"][quantized]) > 0


@pytest.mark.parametrize("channels, multiplier", [(3, 1), (12, 1), (9, 2)])
def test_builtin_depthwise_rounds_its_last_partial_block_of_channels_apart(channels, multiplier):
    # LiteRT's builtin depthwise kernel: whole blocks of 8 output channels with ruy's rounding,
    # the channels after the last whole block with TFLite's double rounding.
    keras.utils.set_random_seed(seeded(0))
    model = keras.Sequential([keras.Input((9, 9, channels)), L.DepthwiseConv2D(3, padding="same", depth_multiplier=multiplier)])
    x = np.random.default_rng(0).normal(size=(400, 9, 9, channels)).astype(np.float32)
    _exact_post_training_int8(model, x)


def test_per_tensor_fully_connected_takes_the_scale_product_in_float32():
    """TFLite's multiplier of a per-tensor FULLY_CONNECTED is double(float32(s_in s_w)) / s_out,
    not a double product: the last bits differ, and with them outputs on a rounding boundary."""
    keras.utils.set_random_seed(seeded(3))
    model = keras.Sequential([keras.Input((640,)), L.Dense(128, activation="relu")])
    x = np.random.default_rng(3).normal(size=(2000, 640)).astype(np.float32)
    graph, values = _exact_post_training_int8(model, x)
    op = next(op for op in graph.ops if op.name == "FULLY_CONNECTED")
    (s_in, z_in), (s_out, z_out) = graph.tensors[op.inputs[0]].grid(), graph.tensors[op.outputs[0]].grid()
    s_w = float(graph.tensors[op.inputs[1]].scale[0])
    float32_product = np.float64(np.float32(s_in) * np.float32(s_w)) / np.float64(s_out)
    double_product = np.float64(s_in) * np.float64(s_w) / np.float64(s_out)
    m32, e32 = fp.quantize_multiplier(float32_product)
    m64, e64 = fp.quantize_multiplier(double_product)
    assert (m32, e32) != (m64, e64)
    weights = graph.tensors[op.inputs[1]].data.astype(np.int64)
    bias = graph.tensors[op.inputs[2]].data if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
    acc = (values["builtin"][op.inputs[0]].astype(np.int64) - z_in) @ weights.T + (0 if bias is None else bias)
    with_double = np.clip(fp.multiply_by_quantized_multiplier_upward(acc, m64, e64) + z_out, z_out, 127)
    assert np.count_nonzero(with_double != values["builtin"][op.outputs[0]]) > 0  # the rule is observable here


def test_builtin_add_rounds_its_input_rescales_once():
    """LiteRT's builtin int8 ADD rounds its two input rescales once (ties up), TFLite's reference
    kernel twice. They differ on sums within ~1e-6 of a half, which a trained ResNet-8 at W3
    hits (tests/export/data: the model from `make bench-zoo`'s recipe, 4 test inputs). (The
    untrained ResNet-8 of tests/models/test_zoo.py hits the output rescale, rounded twice.)"""
    data = Path(__file__).parent / "data"
    tflite_bytes = (data / "resnet8_w3_trained.tflite").read_bytes()
    inputs = np.load(data / "resnet8_w3_add_inputs.npy")
    graph = Graph(tflite_bytes)
    comparisons, values = compare_families(tflite_bytes, inputs, graph=graph)
    _assert_exact(comparisons)
    op = [op for op in graph.ops if op.name == "ADD"][1]
    (sa, za), (sb, zb), (so, zo) = (graph.tensors[op.inputs[0]].grid(), graph.tensors[op.inputs[1]].grid(),
                                    graph.tensors[op.outputs[0]].grid())
    a, b = (values["builtin"][i].astype(np.int64) for i in op.inputs[:2])
    twice_max = 2.0 * max(float(sa), float(sb))
    (m_a, e_a), (m_b, e_b) = fp.quantize_multiplier(float(sa) / twice_max), fp.quantize_multiplier(float(sb) / twice_max)
    m_o, e_o = fp.quantize_multiplier(twice_max / ((1 << 20) * float(so)))
    twice = fp.multiply_by_quantized_multiplier
    double_rounded = np.clip(twice(twice((a - za) << 20, m_a, e_a) + twice((b - zb) << 20, m_b, e_b), m_o, e_o) + zo, zo, 127)
    assert np.count_nonzero(double_rounded != values["builtin"][op.outputs[0]]) > 0  # the rule is observable here


def test_mean_on_one_grid_in_and_out_is_requantized_with_the_multiplier_on_every_runtime():
    """A global average pool after ReLU6 whose calibrated range is ReLU6's own [0, 6] (MobileNetV2
    at seed 2 of the zoo test): its MEAN has equal scales and zero points in and out. TFLite's older same-grid branch truncated sum // n there; LiteRT 2.3
    (builtin, BUILTIN_REF) and TFLite Micro requantize with the multiplier like any other MEAN
    (seed 2 of the zoo test found 3,790 of 20,480 MobileNetV2-0.35 elements off with truncation).
    Inputs spread widely, so that most 3x3 sums are not multiples of 9."""
    from export.device import micro_check
    from export.device.check import quantize_input
    from toolkit import QuantScheme, quantize

    keras.utils.set_random_seed(seeded(0))
    inputs = keras.Input((3, 3, 8))
    conv = L.Conv2D(16, 1)
    x = L.ReLU(6.0)(conv(inputs))   # as MobileNetV2 ends: ReLU6, then the pool
    model = keras.Model(inputs, L.Dense(4)(L.GlobalAveragePooling2D()(x)))
    # Channel 0 always saturates at 6 and channel 1 at 0, so the pool's calibrated range is
    # ReLU6's [0, 6] (MobileNetV2's case); the other channels spread inside it.
    bias = np.zeros(16, np.float32)
    bias[:2] = 100.0, -100.0
    conv.bias.assign(bias)
    data = np.random.default_rng(seeded(0)).normal(0, 2, size=(64, 3, 3, 8)).astype(np.float32)
    hard = harden(quantize(model, QuantScheme(weight_bits=8), calibration_data=data))
    tflite_bytes = convert(hard, "int8")
    graph = Graph(tflite_bytes)
    (mean,) = [op for op in graph.ops if op.name == "MEAN"]
    assert graph.tensors[mean.inputs[0]].grid() == graph.tensors[mean.outputs[0]].grid()   # the case under test
    device_inputs = quantize_input(data, {"dtype": np.int8, "quantization": graph.tensors[graph.inputs[0]].grid()})
    comparisons, values = compare_families(tflite_bytes, device_inputs, graph=graph)
    _assert_exact(comparisons)
    sums = values["reference"][mean.inputs[0]].astype(np.int64).sum(axis=(1, 2))
    assert np.mean(sums % 9 != 0) > 0.2   # truncation and the multiplier path would disagree here
    try:
        micro_check.micro_runtime()
    except micro_check.MicroUnavailable:
        return
    batch_one = convert(hard, "int8", batch_size=1)
    arena = micro_check.smallest_arena(batch_one, device_inputs[0])
    outputs, _ = micro_check.run_all(batch_one, device_inputs, arena + micro_check.ARENA_ALIGNMENT)
    expected = Graph(batch_one).run(device_inputs, "micro")
    np.testing.assert_array_equal(outputs, expected[Graph(batch_one).outputs[0]].reshape(outputs.shape))


def test_xnnpack_mean_takes_the_grid_ratio_before_dividing_by_the_count():
    """XNNPACK's MEAN scale is float32(float32(s_in / s_out) / n). On the grids of MobileNetV2-0.35's
    pool at W2 (a near-tie found there: 43 of 81,920 elements), a 3x3 sum of -471 is 76.499998
    steps above the zero point: XNNPACK gives 76; the scale s_in / (s_out n) taken in one
    division computes 76.50001 and rounds it to 77."""
    from tests.helpers import with_tensor_grids

    model = keras.Sequential([keras.Input((3, 3, 4)), L.GlobalAveragePooling2D()])
    x = np.random.default_rng(0).uniform(0, 6, size=(16, 3, 3, 4)).astype(np.float32)
    tflite_bytes = post_training_int8(model, x)
    graph = Graph(tflite_bytes)
    (mean,) = [op for op in graph.ops if op.name == "MEAN"]
    input_scale, output_scale = 0.0235294122248888, 0.023273101076483727
    tflite_bytes = with_tensor_grids(tflite_bytes, {mean.inputs[0]: (input_scale, -128), mean.outputs[0]: (output_scale, -128)})
    inputs = np.random.default_rng(1).integers(-128, 128, size=(64, 3, 3, 4)).astype(np.int8)
    inputs[:, :, :, 0] = -52
    inputs[:, 0, :, 0] = -53   # channel 0 sums to 6 (-52) + 3 (-53) = -471
    comparisons, values = compare_families(tflite_bytes, inputs, graph=Graph(tflite_bytes))
    _assert_exact(comparisons)
    assert (values["xnnpack"][graph.outputs[0]][:, 0] == 76 - 128).all()
    one_division = np.float32(input_scale) / (np.float32(output_scale) * np.float32(9))
    assert np.rint(np.float32(-471) * one_division + np.float32(128 * 9) * one_division) == 77


def test_hard_swish_equals_litert_in_every_family():
    """HARD_SWISH (MobileNetV3's activation) between two layers, and alone on 40 random grids over
    all 256 int8 inputs (multipliers with exponents of either sign)."""
    from tests.helpers import with_tensor_grids

    keras.utils.set_random_seed(seeded(0))
    model = keras.Sequential([keras.Input((12,)), L.Dense(16), L.Activation("hard_swish"), L.Dense(4)])
    x = 2.0 * np.random.default_rng(seeded(0)).normal(size=(256, 12)).astype(np.float32)
    graph, _ = _exact_post_training_int8(model, x)
    assert "HARD_SWISH" in [op.name for op in graph.ops]
    alone = post_training_int8(keras.Sequential([keras.Input((256,)), L.Activation("hard_swish")]),
                                np.random.default_rng(0).normal(size=(16, 256)).astype(np.float32))
    (op,) = Graph(alone).ops
    every_input = np.arange(-128, 128, dtype=np.int8)[None]
    rng = np.random.default_rng(seeded(1))
    for _ in range(40):
        scales = np.exp(rng.uniform(np.log(0.004), np.log(0.3), size=2))
        zeros = rng.integers(-128, 128, size=2)
        tflite_bytes = with_tensor_grids(alone, {op.inputs[0]: (scales[0], zeros[0]), op.outputs[0]: (scales[1], zeros[1])})
        comparisons, _ = compare_families(tflite_bytes, every_input, graph=Graph(tflite_bytes))
        _assert_exact(comparisons)


@pytest.mark.parametrize("channels", [6, 20, 40])
def test_builtin_keep_dims_mean_rounds_its_blocks_of_16_channels_apart(channels):
    """GlobalAveragePooling2D(keepdims=True) (keras.applications MobileNet's head): LiteRT's
    builtin kernel requantizes whole blocks of 16 channels with SIMD (ties up) and the channels
    after them one by one (double rounding). On the grids of a MobileNet(0.25) head at W4 the
    two roundings disagree on a quarter of the sums, so a wrong block size misses."""
    from tests.helpers import with_tensor_grids

    model = keras.Sequential([keras.Input((2, 2, channels)), L.GlobalAveragePooling2D(keepdims=True)])
    alone = post_training_int8(model, np.random.default_rng(0).normal(size=(16, 2, 2, channels)).astype(np.float32))
    (op,) = Graph(alone).ops
    tflite_bytes = with_tensor_grids(alone, {op.inputs[0]: (0.010938328690826893, -128), op.outputs[0]: (0.010445035062730312, -128)})
    inputs = np.random.default_rng(seeded(channels)).integers(-128, 128, size=(500, 2, 2, channels)).astype(np.int8)
    comparisons, _ = compare_families(tflite_bytes, inputs, graph=Graph(tflite_bytes))
    _assert_exact(comparisons)
    sums = inputs.astype(np.int64).sum(axis=(1, 2))
    multiplier, shift = fp.quantize_multiplier(float(np.float32(0.010938328690826893) / (4 * np.float32(0.010445035062730312))))
    disagree = fp.multiply_by_quantized_multiplier(sums, multiplier, shift) != fp.multiply_by_quantized_multiplier_upward(sums, multiplier, shift)
    assert disagree.mean() > 0.1   # the rule is observable in every channel


def test_running_every_family_at_once_equals_running_each_and_shares_what_the_rules_share():
    from export.device.reference import FAMILIES

    quantized, x = calibrated("conv2d", 4)
    graph = Graph(convert(harden(quantized), "int8"))
    inputs = np.clip(np.round(x / graph.tensors[graph.inputs[0]].scale[0]) + graph.tensors[graph.inputs[0]].zero_point[0],
                     -128, 127).astype(np.int8)
    joint = graph.run_families(inputs, FAMILIES)
    for family in FAMILIES:
        alone = graph.run(inputs, family)
        assert alone.keys() == joint[family].keys()
        assert all(np.array_equal(alone[index], joint[family][index]) for index in alone)
    first_op = graph.ops[0]   # a CONV_2D: XNNPACK's rules are the same on both ISAs, ruy's are not
    assert first_op.name == "CONV_2D"
    assert joint["xnnpack"][first_op.outputs[0]] is joint["xnnpack-arm64"][first_op.outputs[0]]
    assert joint["builtin"][first_op.outputs[0]] is not joint["builtin-arm64"][first_op.outputs[0]]


def test_the_reference_kernels_take_a_per_tensor_fully_connected_multiplier_from_the_double_product(monkeypatch):
    """LiteRT's builtin kernels take double(float32(s_in s_w)) / s_out (the test above); its
    reference kernels (BUILTIN_REF) the double product s_in s_w / s_out. An accumulator placed
    where the two products fall on either side of 85.5 steps (the grids of a trained autoencoder's
    layer, whose reference-kernel outputs differed in 49 elements) tells them apart."""
    import dataclasses

    from export.device.reference import rules
    from tests.helpers import with_constant, with_tensor_grids

    keras.utils.set_random_seed(seeded(5))
    model = keras.Sequential([keras.Input((1,)), L.Dense(1, bias_initializer="ones")])
    x = np.random.default_rng(5).normal(size=(64, 1)).astype(np.float32)
    tflite_bytes = post_training_int8(model, x)
    graph = Graph(tflite_bytes)
    op = next(op for op in graph.ops if op.name == "FULLY_CONNECTED")
    x_index, w_index, b_index = op.inputs[:3]
    s_in, s_w, s_out = np.float32(0.01912367343902588), np.float32(0.0018236335599794984), np.float32(0.01933642104268074)
    tflite_bytes = with_tensor_grids(tflite_bytes, {x_index: (s_in, -128), w_index: (s_w, 0),
                                                    b_index: (s_in * s_w, 0), op.outputs[0]: (s_out, -128)})
    tflite_bytes = with_constant(with_constant(tflite_bytes, w_index, [[127]]), b_index, [47406 - 200 * 127])
    device_inputs = np.array([[72], [-28]], np.int8)          # acc = 47406 and 34706
    double = np.float64(s_in) * np.float64(s_w) / np.float64(s_out)
    single = np.float64(np.float32(s_in * s_w)) / np.float64(s_out)
    assert 47406 * double < 85.5 < 47406 * single              # the boundary between the products
    comparisons, _ = compare_families(tflite_bytes, device_inputs, families=("reference",))
    _assert_exact(comparisons, ("reference",))
    monkeypatch.setitem(rules.RULES, KernelFamily.REFERENCE,
                        dataclasses.replace(rules.RULES[KernelFamily.REFERENCE], fc_float32_scale_product=True))
    comparisons, _ = compare_families(tflite_bytes, device_inputs, families=("reference",))
    assert comparisons["reference"]["mismatched_elements"] == 1
