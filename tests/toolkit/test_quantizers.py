import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import assert_config_round_trip
from tests.seeds import seeded
from toolkit.errors import ConfigError
from toolkit.quantizers import (
    ActivationQuantizer,
    WeightQuantizer,
    exported_range,
    fake_quant,
    max_abs_step,
    mse_steps,
    nudged_grid,
)


def built_weight_quantizer(kernel, channel_axes=(-1,), **kwargs):
    layer = keras.layers.Layer()
    variable = layer.add_weight(shape=kernel.shape, initializer=keras.initializers.Constant(kernel), name="kernel")
    quantizer = WeightQuantizer(**kwargs)
    quantizer.build(layer, variable, channel_axes)
    return quantizer, variable, layer


def reference_fake_quant(w, bits, per_channel_axis=None):
    """numpy: s = max|w| / qmax (per channel or tensor), q = clip(round_half_even(w / s))."""
    qmax = 2 ** (bits - 1) - 1
    if per_channel_axis is None:
        s = np.abs(w).max() / qmax
    else:
        axes = tuple(a for a in range(w.ndim) if a != per_channel_axis % w.ndim)
        s = np.abs(w).max(axis=axes, keepdims=True) / qmax
    return np.clip(np.round(w / s), -qmax, qmax) * s, s


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("rounding", ["ste", "soft", "sigmoid"])
def test_weight_quantizer_at_large_alpha_equals_numpy_reference(bits, rounding):
    w = np.random.default_rng(bits).normal(size=(3, 4, 6)).astype(np.float64)
    quantizer, variable, layer = built_weight_quantizer(w, rounding=rounding, bits=bits)
    if hasattr(layer, "rounding_alpha"):
        layer.rounding_alpha.assign(1e7)
    expected, _ = reference_fake_quant(w, bits, per_channel_axis=-1)
    np.testing.assert_allclose(quantizer(variable).numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bits", range(2, 9))
def test_every_bit_width_uses_its_symmetric_narrow_grid(bits):
    w = np.random.default_rng(0).normal(size=(5, 5, 8, 16)).astype(np.float32)
    quantizer, variable, _ = built_weight_quantizer(w, bits=bits, rounding="ste")
    q = quantizer.integers(variable).numpy()
    qmax = 2 ** (bits - 1) - 1
    assert q.min() == -qmax or q.max() == qmax  # the extreme weight of a channel lands on the edge
    assert set(np.unique(q)) <= set(range(-qmax, qmax + 1))
    grid = quantizer.grid(variable)
    assert (grid.qmin, grid.qmax) == (-qmax, qmax)
    np.testing.assert_array_equal(grid.zero_point.numpy(), 0)
    np.testing.assert_allclose(quantizer(variable).numpy(), q * grid.scale.numpy(), rtol=1e-6)
    if bits == 2:
        assert set(np.unique(q)) == {-1, 0, 1}  # ternary


def test_per_channel_and_per_tensor_scales():
    w = np.random.default_rng(1).normal(size=(3, 3, 4, 5)).astype(np.float32) * np.arange(1, 6)
    per_channel, variable, _ = built_weight_quantizer(w, bits=4)
    _, expected_scale = reference_fake_quant(w, 4, per_channel_axis=-1)
    np.testing.assert_allclose(per_channel.scale(variable).numpy(), expected_scale, rtol=1e-6)
    per_tensor, variable, _ = built_weight_quantizer(w, bits=4, per_channel=False)
    assert per_tensor.scale(variable).numpy().size == 1
    np.testing.assert_allclose(per_tensor.scale(variable).numpy().ravel(), [np.abs(w).max() / 7], rtol=1e-6)
    # Depthwise kernels: one scale per (c_in, multiplier) output channel.
    depthwise, variable, _ = built_weight_quantizer(w, channel_axes=(-2, -1), bits=4)
    assert depthwise.scale(variable).shape == (1, 1, 4, 5)


@pytest.mark.parametrize("rounding", ["ste", "soft", "sigmoid"])
def test_weight_quantizer_passes_gradients(rounding):
    w = np.random.default_rng(2).normal(size=(4, 3)).astype(np.float32)
    quantizer, variable, _ = built_weight_quantizer(w, bits=3, rounding=rounding)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(quantizer(variable) * tf.constant(np.arange(12.0).reshape(4, 3), tf.float32))
    grad = tape.gradient(loss, variable)
    assert grad is not None and np.count_nonzero(grad.numpy()) > 0


def test_learned_step_gets_the_lsq_gradient():
    w = np.random.default_rng(3).normal(size=(16, 4)).astype(np.float32)
    quantizer, variable, _ = built_weight_quantizer(w, bits=3, rounding="ste", learned_step=True)
    step = quantizer.step_variable
    initial = mse_steps(w, (0,), 3)     # a learned step starts at the kernel's MSE step
    np.testing.assert_allclose(step.numpy(), initial, rtol=1e-6)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(quantizer(variable) - 1.0))
    grad = tape.gradient(loss, step).numpy()
    # LSQ: dL/ds = sum dL/dx_hat * (q - w/s) inside the range, times g = 1 / sqrt(N qmax).
    s = initial
    q = np.clip(np.round(w / s), -3, 3)
    inside = np.abs(w / s) <= 3
    dxhat = 2 * (q * s - 1.0)
    expected = np.sum(dxhat * np.where(inside, q - w / s, q), axis=0, keepdims=True) / np.sqrt(16 * 3)
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)


def built_activation_quantizer(**kwargs):
    layer = keras.layers.Layer()
    quantizer = ActivationQuantizer(**kwargs)
    quantizer.build(layer)
    return quantizer


def test_activation_range_converges_to_the_input_distribution():
    quantizer = built_activation_quantizer(ema_decay=0.9)
    rng = np.random.default_rng(0)
    for _ in range(100):
        quantizer(tf.constant(rng.uniform(-2.0, 3.0, size=4096), tf.float32), training=True)
    assert abs(float(quantizer.range_min) + 2.0) < 0.01
    assert abs(float(quantizer.range_max) - 3.0) < 0.01
    before = (float(quantizer.range_min), float(quantizer.range_max))
    quantizer(tf.constant([-100.0, 100.0]), training=False)  # frozen in inference
    assert (float(quantizer.range_min), float(quantizer.range_max)) == before


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("range_", [(-2.0, 3.0), (0.0, 6.0), (-0.3, 0.01), (0.5, 4.0)])
def test_activation_grid_matches_tf_fake_quant_and_zero_is_exact(symmetric, range_):
    quantizer = built_activation_quantizer(symmetric=symmetric)
    quantizer.range_min.assign(range_[0])
    quantizer.range_max.assign(range_[1])
    quantizer.range_initialized.assign(1.0)
    x = tf.constant(np.linspace(range_[0] - 1, range_[1] + 1, 1001) + 1e-4, tf.float32)
    y = quantizer(x).numpy()
    assert quantizer(tf.zeros(3)).numpy().tolist() == [0.0, 0.0, 0.0]
    lo, hi = quantizer.min_max()
    reference = tf.quantization.fake_quant_with_min_max_vars(x, lo, hi, num_bits=8, narrow_range=False).numpy()
    np.testing.assert_allclose(y, reference, atol=1e-6)
    g = quantizer.grid()
    assert -128 <= float(g.zero_point) <= 127 and float(g.zero_point) == round(float(g.zero_point))


def test_fixed_range_for_softmax_is_tflite_grid():
    quantizer = built_activation_quantizer(fixed_range=(0.0, 255 / 256))
    g = quantizer.grid()
    assert float(g.scale) == pytest.approx(1 / 256)
    assert float(g.zero_point) == -128


def test_fake_quant_clips_and_stops_gradient_outside_the_range():
    x = tf.constant([-10.0, 0.4, 10.0])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fake_quant(x, tf.constant(1.0), tf.constant(0.0), -2, 2)
    np.testing.assert_array_equal(y.numpy(), [-2.0, 0.0, 2.0])
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), [0.0, 1.0, 0.0])


@pytest.mark.parametrize("quantizer", [WeightQuantizer(bits=3, rounding="sigmoid", per_channel=False, learned_step=True),
                                       ActivationQuantizer(bits=8, symmetric=True, fixed_range=(0.0, 1.0))])
def test_quantizer_configs_round_trip(quantizer):
    assert_config_round_trip(quantizer)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: WeightQuantizer(bits=9), "Expected `bits` between 2 and 8. Received: bits=9"),
        (lambda: WeightQuantizer(bits=1), "bits=1"),
        (lambda: WeightQuantizer(rounding="nearest"), "'nearest'"),
        (lambda: ActivationQuantizer(bits=0), "activation_bits=0"),
        (lambda: ActivationQuantizer(ema_decay=1.0), "ema_decay"),
        (lambda: ActivationQuantizer(fixed_range=(1.0, 0.0)), "fixed_range"),
    ],
)
def test_invalid_quantizer_arguments_are_named(factory, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        factory()


def _every_softedge_layer_model(kind: str) -> keras.Model:
    """A float model whose quantized and hard forms hold every softedge layer class: kernels of
    every type, a BatchNormalization with no kernel before it (QuantChannelAffine, HardConstantOp)
    and average pooling (QuantAveragePooling)."""
    layers = keras.layers
    if kind == "conv1d":
        inputs = keras.Input((16, 2))
        x = layers.Conv1D(4, 3, padding="same", activation="relu")(inputs)
        return keras.Model(inputs, layers.Dense(3)(layers.Flatten()(x)))
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = layers.Add()([layers.DepthwiseConv2D(3, padding="same")(x), layers.Conv2D(4, 1)(x)])
    x = layers.BatchNormalization()(x)
    x = layers.AveragePooling2D(2)(layers.ReLU()(x))
    return keras.Model(inputs, layers.Dense(3)(layers.Flatten()(x)))


def _classes_in(model: keras.Model) -> set[str]:
    names = set()
    for layer in model.layers:
        names.add(type(layer).__name__)
        names.update(type(value).__name__ for value in vars(layer).values()
                     if isinstance(value, (WeightQuantizer, ActivationQuantizer)))
    return names


def test_every_registered_softedge_class_round_trips_through_a_keras_file(tmp_path):
    """Every class softedge registers with Keras is saved in a .keras file and loaded back with
    safe_mode on, computing what it computed (the loss GlobalBatchMean through its config)."""
    from export.artifacts import load_keras_model, save_keras_model
    from export.harden import harden
    from toolkit import QuantScheme, quantize
    from toolkit.distribute import GlobalBatchMean

    registered = {name.split(">", 1)[1] for name, obj in keras.saving.get_custom_objects().items()
                  if name.startswith("softedge>")}
    assert {"WeightQuantizer", "ActivationQuantizer", "QuantizeActivation"} <= registered
    covered = set()
    for kind in ("conv1d", "conv2d"):
        keras.utils.set_random_seed(0)
        model = _every_softedge_layer_model(kind)
        x = np.random.default_rng(0).normal(size=(32, *model.inputs[0].shape[1:])).astype(np.float32)
        quantized = quantize(model, QuantScheme(weight_bits=4), calibration_data=x)
        for stage, built in (("quantized", quantized), ("hard", harden(quantized))):
            path = tmp_path / f"{kind}-{stage}.keras"
            save_keras_model(built, path)
            loaded = load_keras_model(path)
            np.testing.assert_array_equal(loaded.predict(x, verbose=0), built.predict(x, verbose=0))
            covered |= _classes_in(loaded)
    loss = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(
        GlobalBatchMean(keras.losses.SparseCategoricalCrossentropy(from_logits=True))))
    assert type(loss) is GlobalBatchMean
    covered.add("GlobalBatchMean")
    assert registered <= covered, f"registered but never saved and loaded: {sorted(registered - covered)}"


def test_weight_and_activation_quantizers_follow_the_quantizer_protocol():
    from toolkit.quantizers import Quantizer

    for quantizer in (WeightQuantizer(bits=3), ActivationQuantizer(bits=8)):
        assert isinstance(quantizer, Quantizer)
        rebuilt = type(quantizer).from_config(quantizer.get_config())
        assert rebuilt.get_config() == quantizer.get_config() and (rebuilt.qmin, rebuilt.qmax) == (quantizer.qmin, quantizer.qmax)


def test_grid_steps_are_the_same_in_a_tf_function_as_eagerly():
    """Grappler rewrites x / const into x * (1 / const) in a graph, which moves the last bit of a
    step for divisors such as 127 and 255; `quantizers.divide` keeps the eager result, so the
    steps a compiled training step uses are the ones harden bakes and the converter stores."""
    rng = np.random.default_rng(0)
    lo = tf.constant(-rng.uniform(0, 10, 2000).astype(np.float32))
    hi = tf.constant(rng.uniform(0, 10, 2000).astype(np.float32))
    kernel = tf.constant(rng.normal(size=(3, 3, 8, 2000)).astype(np.float32))

    def steps(lo, hi, kernel):
        return nudged_grid(lo, hi, 8).scale, max_abs_step(kernel, (0, 1, 2), 127), max_abs_step(kernel, (0, 1, 2), 3)

    for eager, graph in zip(steps(lo, hi, kernel), tf.function(steps)(lo, hi, kernel), strict=True):
        np.testing.assert_array_equal(graph.numpy(), eager.numpy())
    # The rewrite this guards against does move steps: x * (1 / 255) differs from x / 255.
    width = (hi - lo).numpy()
    assert np.any(width * (np.float32(1) / np.float32(255)) != width / np.float32(255))


def test_the_exported_range_gives_the_converter_back_the_grid():
    """For 500 random grids at 2, 4 and 8 bits: the converter's step float32((double(hi) -
    double(lo)) / levels) and nudged zero point of `exported_range` are the grid's, bit for bit;
    fake_quant's float32 step (hi - lo) / levels is too wherever some range gives it (all but a
    few 8-bit grids whose 255 s falls between two float32 differences)."""
    rng = np.random.default_rng(seeded(3))
    op_missed = 0
    for _ in range(500):
        bits = int(rng.choice([2, 4, 8]))
        low = -float(np.exp(rng.uniform(-8, 4))) if rng.random() < 0.7 else 0.0
        grid = nudged_grid(tf.constant(low), tf.constant(float(np.exp(rng.uniform(-8, 4)))), bits)
        lo, hi = exported_range(grid)
        levels = grid.qmax - grid.qmin
        scale = np.float32(grid.scale)
        assert np.float32((hi - lo) / levels) == scale
        assert int(np.floor(-lo / np.float64(scale) + 0.5)) + grid.qmin == int(grid.zero_point)
        op_missed += np.float32(np.float32(hi) - np.float32(lo)) / np.float32(levels) != scale
    assert op_missed < 50
