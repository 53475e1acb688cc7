"""Forward + backward time of every rounding method on a 1M-element tensor.

Ratios against two baselines measured in the same run and mode:
    tf.round                              (forward only: it has no gradient)
    x + stop_gradient(round(x) - x)       (the hand-written straight-through estimator)
in three modes: eager, tf.function (graph), tf.function(jit_compile=True) (XLA).
Prints a markdown table; writes bench/results/rounding.json.

    python -m bench.rounding [--size N] [--repeats R]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from export.atomic import write_json  # noqa: E402
from toolkit import rounding  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "rounding.json"
ALPHA = 5.0


def _candidates():
    def hand_ste(x, alpha):
        return x + tf.stop_gradient(tf.round(x) - x)

    def tf_round(x, alpha):
        return tf.round(x)

    yield "tf.round", tf_round
    yield "hand-written ste", hand_ste
    for name in rounding.METHODS:
        yield name, lambda x, alpha, name=name: rounding.apply(name, x, alpha)


def _step_fn(fn):
    def step(x, alpha):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x, alpha)
            loss = tf.reduce_sum(y)
        return loss, tape.gradient(loss, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    return step


def _time(step, x, alpha, repeats: int) -> float:
    """Median seconds per call after one warm-up call (which traces/compiles)."""
    step(x, alpha)[1].numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(x, alpha)[1].numpy()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def run(size: int = 1_000_000, repeats: int = 15, seed: int = 0) -> dict:
    x = tf.constant(np.random.default_rng(seed).normal(0, 10, size), tf.float32)
    alpha = tf.Variable(ALPHA)
    modes = {
        "eager": lambda f: f,
        "graph": lambda f: tf.function(f),
        "xla": lambda f: tf.function(f, jit_compile=True),
    }
    rows = []
    for mode, wrap in modes.items():
        seconds = {name: _time(wrap(_step_fn(fn)), x, alpha, repeats) for name, fn in _candidates()}
        for name, s in seconds.items():
            rows.append({
                "mode": mode,
                "method": name,
                "ms": s * 1e3,
                "ratio_vs_tf_round": s / seconds["tf.round"],
                "ratio_vs_hand_ste": s / seconds["hand-written ste"],
            })
    return {
        "size": size,
        "repeats": repeats,
        "alpha": ALPHA,
        "tensorflow": tf.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "rows": rows,
    }


def format_table(result: dict) -> str:
    lines = [
        f"Forward+backward, {result['size']:,} float32 elements, median of {result['repeats']}",
        "",
        "| mode | method | ms | x tf.round | x hand-written ste |",
        "|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['mode']} | {r['method']} | {r['ms']:.2f} | {r['ratio_vs_tf_round']:.2f} | {r['ratio_vs_hand_ste']:.2f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = run(args.size, args.repeats, args.seed)
    print(format_table(result))
    write_json(args.output, result)
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
