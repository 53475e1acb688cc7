"""Runs a quantized model's training under MirroredStrategy over two logical CPUs; prints JSON.

A separate process because logical devices must be configured before TensorFlow starts.
"""

import json

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tests.seeds import seeded  # noqa: E402
from tests.toolkit.conftest import small_model  # noqa: E402
from toolkit import AlphaSchedule, AnnealRounding, QuantScheme, quantize  # noqa: E402
from toolkit.distribute import global_batch_loss, synchronized_batch_norm  # noqa: E402


def trained(strategy, quantized: bool):
    """small_model("conv1d") (BN, and with `quantized` activation ranges) trained 2 epochs on 100
    samples in batches of 32 (the last one 4: 2 + 2 on two replicas); its variables."""
    keras.utils.set_random_seed(seeded(0))
    x = np.random.default_rng(0).normal(size=(100, 16, 2)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 4, 100)
    with strategy.scope():
        model = small_model("conv1d")
        if quantized:
            model = quantize(model, QuantScheme(weight_bits=4, rounding="ste"), calibration_data=x[:32])
        model.compile(keras.optimizers.Adam(1e-2), global_batch_loss(keras.losses.SparseCategoricalCrossentropy(from_logits=True)))
    with synchronized_batch_norm(model):
        model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(32), epochs=2, verbose=0)
    return {v.path: v.numpy() for v in model.variables}


def largest_difference(strategy, quantized: bool) -> float:
    """max over variables of max|two replicas - one device| / max(max|one device|, 1). (One
    strategy object per process: a second one's collectives would reuse the first's keys.)"""
    one = trained(tf.distribute.get_strategy(), quantized)
    two = trained(strategy, quantized)
    return max(float(np.max(np.abs(two[name] - value)) / max(float(np.max(np.abs(value))), 1.0))
               for name, value in one.items())


def main():
    keras.utils.set_random_seed(seeded(0))
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    x = np.random.default_rng(0).normal(size=(128, 16, 2)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 4, 128)
    with strategy.scope():
        model = quantize(small_model("conv1d"), QuantScheme(weight_bits=4, rounding="soft"))
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [v.numpy().copy() for v in model.trainable_variables]
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    history = model.fit(dataset, epochs=2, verbose=0,
                        callbacks=[AnnealRounding(AlphaSchedule("linear", 1.0, 5.0, steps=8))])
    kernel = model.get_layer("conv").float_kernel
    replicas = [t.numpy() for t in strategy.experimental_local_results(kernel.value)]
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "loss": history.history["loss"],
        "changed": any(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables, strict=True)),
        "replicas_agree": all(np.array_equal(replicas[0], r) for r in replicas),
        "range_max": float(model.get_layer("signal_quant").quantizer.range_max.numpy()),
        "alpha": history.history["alpha"],
        "float_difference": largest_difference(strategy, quantized=False),
        "quantized_difference": largest_difference(strategy, quantized=True),
    }))


if __name__ == "__main__":
    main()
