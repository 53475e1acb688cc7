"""Training under TensorFlow's distribution strategies: one host, or several workers.

    strategy = strategy_named("multi-worker")   # MultiWorkerMirroredStrategy, from TF_CONFIG
    with strategy.scope():
        model = ...; model.compile(...)         # variables mirrored on every replica
        with synchronized_batch_norm(model):
            prepare_fit(model, x[:32], y[:32])
            model.fit(...)

Data parallelism: every replica holds the same weights and computes the gradient of its share
of the global batch; the gradients are summed across replicas, so one step is one step on the
whole global batch, up to the order of floating-point sums, where three things hold:
- the loss is the global batch's mean also when the shares differ in size (`GlobalBatchMean`;
  Keras' own reduction averages the replicas' means);
- BatchNormalization normalizes with the global batch's moments (`synchronized_batch_norm`;
  by default each replica uses its own share's);
- activation ranges step with the global batch's min and max (`ActivationQuantizer.update_range`
  gathers them across replicas).

Keras 3 (3.13 here) cannot `fit` under MultiWorkerMirroredStrategy as released
(keras-team/keras#20585, tensorflow/tensorflow#72388). `prepare_fit` works around its two
faults, and training under several workers runs one step per compiled call and no XLA:
    1. `fit` builds the model from a first batch reduced with strategy.reduce("MEAN", ...),
       which fails on a multi-worker PerReplica batch. `prepare_fit` builds it from a local
       batch instead (the same `_symbolic_build`), and the model skips Keras' own build.
    2. The step's logs (scalars) are reduced with strategy.reduce("MEAN", v, axis=0), which
       fails on a scalar. `reduce_per_replica` is wrapped so that multi-worker scalars are
       reduced with axis=None; every other case goes to Keras' own function.
    3. Several steps per call (`steps_per_execution` > 1) put the collective all-reduce inside
       Keras' while loop, which fails ("You must feed a value for placeholder tensor").
    4. XLA (`jit_compile`) cannot compile the collective ops on CPU (UnimplementedError).
The two-worker test (tests/toolkit/test_distribute.py) trains through these on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os

import keras
import tensorflow as tf

from toolkit.errors import ConfigError
from toolkit.graph import all_layers

__all__ = ["STRATEGIES", "GlobalBatchMean", "WorkerRole", "global_batch_loss", "is_multi_worker", "prepare_fit", "strategy_named", "synchronized_batch_norm",
           "worker_role"]

STRATEGIES = ("none", "mirrored", "multi-worker")


def strategy_named(name: str) -> tf.distribute.Strategy:
    """"none": TensorFlow's default strategy (one device); "mirrored": MirroredStrategy over
    every local GPU (or the CPU); "multi-worker": MultiWorkerMirroredStrategy over the cluster
    that TF_CONFIG describes. Create it first thing: collective ops must be configured before
    TensorFlow runs anything."""
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        _check_tf_config(os.environ.get("TF_CONFIG"))
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"Expected a strategy in {STRATEGIES}. Received: {name!r}")


def _check_tf_config(text: str | None) -> None:
    """TF_CONFIG must name this task's place in a cluster of workers (TensorFlow's format):
    {"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}"""
    example = '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
    if not text:
        raise ConfigError(f"--strategy multi-worker reads the cluster from the TF_CONFIG environment variable, "
                          f"which is not set; for example TF_CONFIG='{example}'")
    try:
        config = json.loads(text)
        workers = config["cluster"]["worker"]
        task = config["task"]
        index = int(task["index"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ConfigError(f"TF_CONFIG is not a cluster description ({error}); expected for example {example}") from None
    if task.get("type") not in ("worker", "chief"):
        raise ConfigError(f"TF_CONFIG task type {task.get('type')!r}: --strategy multi-worker runs workers "
                          f"(and optionally a chief).")
    if task.get("type") == "worker" and not 0 <= index < len(workers):
        raise ConfigError(f"TF_CONFIG task index {index} is outside the cluster's {len(workers)} workers.")


def is_multi_worker(strategy: tf.distribute.Strategy | None = None) -> bool:
    """Whether `strategy` (default: the current one) spans several workers."""
    strategy = strategy or tf.distribute.get_strategy()
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and strategy.extended._num_workers > 1


class WorkerRole:
    """This process's place: `index` among `count` workers; the chief writes the run."""

    def __init__(self, index: int, count: int, chief: bool):
        self.index, self.count, self.chief = index, count, chief

    def __repr__(self) -> str:
        return f"WorkerRole(index={self.index}, count={self.count}, chief={self.chief})"


def worker_role(strategy: tf.distribute.Strategy | None = None) -> WorkerRole:
    """The chief is the task of type "chief", or worker 0 when the cluster has no chief."""
    strategy = strategy or tf.distribute.get_strategy()
    if not is_multi_worker(strategy):
        return WorkerRole(0, 1, True)
    resolver = strategy.cluster_resolver
    spec = resolver.cluster_spec().as_dict()
    count = sum(len(spec.get(kind, [])) for kind in ("chief", "worker"))
    chief = resolver.task_type == "chief" or ("chief" not in spec and resolver.task_id == 0)
    index = resolver.task_id + (1 if resolver.task_type == "worker" and "chief" in spec else 0)
    return WorkerRole(index, count, chief)


@contextlib.contextmanager
def synchronized_batch_norm(model: keras.Model):
    """Every BatchNormalization normalizes with the global batch's moments while inside (when
    the model's strategy has more than one replica): one step then equals one step on the
    global batch."""
    strategy = model.distribute_strategy
    layers = [layer for layer in all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    if strategy.num_replicas_in_sync <= 1:
        layers = []
    before = [layer.synchronized for layer in layers]
    for layer in layers:
        layer.synchronized = True
    try:
        yield
    finally:
        for layer, synchronized in zip(layers, before, strict=True):
            layer.synchronized = synchronized


@keras.saving.register_keras_serializable(package="softedge")
class GlobalBatchMean(keras.losses.Loss):
    """`per_sample` (a Keras loss) averaged over the global batch, whatever its split.

    Keras reduces each replica's loss to the mean over its own share and divides by the number
    of replicas R; the replicas' gradients are then summed. That is the global batch's mean only
    when every share has the same size: a last batch of 29 samples on two replicas (15 + 14)
    gives (mean_15 + mean_14) / 2. Here replica r's loss is sum_{i in r} l_i / N, N the global
    batch's element count (all-reduced), with Keras' "sum" reduction (which it does not divide
    by R), so the summed gradient is that of sum_i l_i / N, as on one device.
    """

    def __init__(self, per_sample: keras.losses.Loss):
        super().__init__(reduction="sum", name=per_sample.name)
        self.per_sample = per_sample
        self.per_sample.reduction = None

    def get_config(self) -> dict:
        return {"per_sample": keras.saving.serialize_keras_object(self.per_sample)}

    @classmethod
    def from_config(cls, config: dict) -> GlobalBatchMean:
        return cls(keras.saving.deserialize_keras_object(config["per_sample"]))

    def call(self, y_true, y_pred):
        values = self.per_sample(y_true, y_pred)
        count = tf.cast(tf.size(values), values.dtype)
        replica = tf.distribute.get_replica_context()
        if replica is not None and replica.num_replicas_in_sync > 1:
            count = replica.all_reduce(tf.distribute.ReduceOp.SUM, count)
        return values / count


def global_batch_loss(loss: keras.losses.Loss, strategy: tf.distribute.Strategy | None = None) -> keras.losses.Loss:
    """`loss` as `GlobalBatchMean` under several replicas; `loss` itself on one."""
    strategy = strategy or tf.distribute.get_strategy()
    return GlobalBatchMean(loss) if strategy.num_replicas_in_sync > 1 else loss


def prepare_fit(model: keras.Model, x_batch, y_batch) -> None:
    """Builds a compiled model for `fit` under a multi-worker strategy (faults 1 and 2 above);
    nothing to do otherwise."""
    if not is_multi_worker(model.distribute_strategy):
        return
    _wrap_reduce_per_replica()
    with model.distribute_strategy.scope():
        model._symbolic_build(data_batch=(x_batch, y_batch))
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None   # built above


def _wrap_reduce_per_replica() -> None:
    from keras.src.backend.tensorflow import trainer

    if getattr(trainer.reduce_per_replica, "_softedge_wrapped", False):
        return
    keras_reduce = trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and is_multi_worker(strategy):
            return tf.nest.map_structure(lambda value: strategy.reduce("MEAN", value, axis=None), values)
        return keras_reduce(values, strategy, reduction)

    reduce_per_replica._softedge_wrapped = True
    trainer.reduce_per_replica = reduce_per_replica
