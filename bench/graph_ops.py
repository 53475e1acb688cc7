"""Ops in one QAT training step's graph, softedge against tfmot, and the step's time
(python -m bench.graph_ops).

Where a model cannot use XLA (a depthwise convolution: `models.training.use_xla`), TensorFlow
runs a training step op by op. For a zoo model after one float epoch, quantized at W{bits}A8
(softedge: `quantize` with soft rounding; tfmot: its n-bit scheme, as `make bench-qat` trains
it), this traces the forward pass and the gradients of one batch (no optimizer) and counts the
graph's ops: in all, without constants, and per op type and per layer (softedge). It then times
that step alone, 16 steps in one tf.function call (the fastest of 7 calls, per step), for both
and for the float Keras 3 model: what a step costs outside `fit` (data, callbacks, Keras'
loop), which `make bench-speed` times whole.

    python -m bench.graph_ops                      # digits_cnn, W3
    python -m bench.graph_ops --model mnist1d_cnn --bits 4
"""

from __future__ import annotations

import argparse
import collections
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench.qat import MODELS, tfmot_qat_model  # noqa: E402
from models import datasets, registry  # noqa: E402
from models.training import Recipe, train_float  # noqa: E402
from toolkit import QuantScheme  # noqa: E402
from toolkit.rewrite import quantize  # noqa: E402


def step_graph(model, loss, batch_shape, batch: int = 64) -> tf.Graph:
    """The graph of loss(model(x)) and its gradients for one batch of `batch` inputs."""

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=True))
        return tape.gradient(value, model.trainable_variables)

    return step.get_concrete_function(tf.TensorSpec([batch, *batch_shape]), tf.TensorSpec([batch], tf.int32)).graph


def step_seconds(model, loss, x, y, apply=None, steps: int = 16, repeats: int = 7) -> float:
    """Seconds per step of forward + gradients on (x, y), and `apply(gradients, variables)` (an
    optimizer's update) where given: the fastest of `repeats` calls (`bench.reference.best_seconds`)
    of one tf.function running `steps` of them (each step's gradients summed, so none is pruned)."""
    from bench.reference import best_seconds

    @tf.function
    def run(x, y):
        total = tf.constant(0.0)
        for _ in tf.range(steps):
            with tf.GradientTape() as tape:
                value = loss(y, model(x, training=True))
            gradients = tape.gradient(value, model.trainable_variables)
            if apply is not None:
                apply(gradients, model.trainable_variables)
            total += tf.add_n([tf.reduce_sum(gradient) for gradient in gradients])
        return total

    run(x, y)   # traced
    return best_seconds(lambda: run(x, y).numpy(), repeats) / steps


def count(graph: tf.Graph, by_layer: bool = False) -> dict:
    """Ops in all, without constants, the commonest types and (by_layer) per top-level scope."""
    operations = graph.get_operations()
    types = collections.Counter(op.type for op in operations)
    counts = {"ops": len(operations), "not_constants": len(operations) - types["Const"], "types": dict(types.most_common(12))}
    if by_layer:
        scopes = collections.Counter(op.name.split("/")[1] for op in operations if op.name.count("/") >= 1)
        counts["layers"] = dict(scopes.most_common())
    return counts


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=list(MODELS), default="digits_cnn")
    parser.add_argument("--bits", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = datasets.load(MODELS[args.model])
    keras.utils.set_random_seed(args.seed)
    model = registry.build(args.model, data.input_shape, data.num_classes)
    train_float(model, data, Recipe(float_epochs=1), seed=args.seed)
    softedge = quantize(model, QuantScheme(weight_bits=args.bits, rounding="soft"), calibration_data=data.x_train[:256])
    import tf_keras

    tfmot = tfmot_qat_model(model, data, args.bits)
    rows = {"softedge": count(step_graph(softedge, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                                         data.input_shape), by_layer=True),
            "tfmot": count(step_graph(tfmot, tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True), data.input_shape))}
    print(f"{args.model} W{args.bits}A8, one training step (forward + gradients, batch 64):")
    for name, row in rows.items():
        print(f"  {name}: {row['ops']} ops, {row['not_constants']} not constants; {row['types']}")
    print(f"  softedge per layer: {rows['softedge']['layers']}")
    x, y = tf.constant(data.x_train[:64]), tf.constant(data.y_train[:64].astype("int32"))
    ours, theirs = keras.losses.SparseCategoricalCrossentropy(from_logits=True), tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    keras_adam, tf_keras_adam = keras.optimizers.Adam(1e-4), tf_keras.optimizers.Adam(1e-4)
    keras_adam.build(softedge.trainable_variables)
    seconds = {"softedge": step_seconds(softedge, ours, x, y),
               "tfmot": step_seconds(tfmot, theirs, x, y),
               "float (Keras 3)": step_seconds(model, ours, x, y),
               "softedge + Adam (Keras 3)": step_seconds(softedge, ours, x, y, keras_adam.apply),
               "tfmot + Adam (tf_keras)": step_seconds(tfmot, theirs, x, y,
                                                       lambda g, v: tf_keras_adam.apply_gradients(zip(g, v, strict=True)))}
    print("  one step alone (forward + gradients [+ the optimizer's update], 16 a call, fastest of 7): " +
          ", ".join(f"{name} {value * 1e3:.2f} ms" for name, value in seconds.items()) +
          f"; softedge / tfmot {seconds['softedge'] / seconds['tfmot']:.2f}x, with Adam "
          f"{seconds['softedge + Adam (Keras 3)'] / seconds['tfmot + Adam (tf_keras)']:.2f}x")


if __name__ == "__main__":
    main()
