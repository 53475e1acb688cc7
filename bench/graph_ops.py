"""Ops in one QAT training step's graph, softedge against tfmot (python -m bench.graph_ops).

Where a model cannot use XLA (a depthwise convolution: `models.training.use_xla`), TensorFlow
runs a training step op by op, and on small tensors each op costs about the same fixed time: the
number of ops is the step's time. For a zoo model after one float epoch, quantized at W{bits}A8
(softedge: `quantize` with soft rounding; tfmot: its n-bit scheme, as `make bench-qat` trains
it), this traces the forward pass and the gradients of one batch (no optimizer) and counts the
graph's ops: in all, without constants, and per op type and per layer (softedge).

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


if __name__ == "__main__":
    main()
