"""Training on .npz shards streamed from disk vs in memory (python -m bench.streaming).

MNIST-1D-shaped data (40 x 1 float32 samples, 10 classes; random, as the measure is of memory
and time, not accuracy) at 1x and 10x `--samples`, written as shards of 10,000 samples (plus
test.npz) and as one .npz. Each case trains mnist1d_cnn in float for `--epochs` epochs (the
recipe: batch 64, XLA, 16 steps per call) in a fresh process, which reports its peak resident
memory (ru_maxrss: TensorFlow's own few hundred MB included) and its warm epochs' time (all
but the first). Writes bench/results/streaming.json and the table in docs/benchmarks.md.

    python -m bench.streaming                      # 100,000 and 1,000,000 samples
    python -m bench.streaming --samples 20000      # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
SHARD_SAMPLES = 10_000
SHAPE, CLASSES = (40, 1), 10


def write_data(directory: Path, samples: int, seed: int) -> None:
    """`directory`/shards/train-XXXX.npz (+ test.npz) and `directory`/whole.npz, the same samples."""
    rng = np.random.default_rng(seed)
    (directory / "shards").mkdir(parents=True)
    means = rng.normal(size=(CLASSES, *SHAPE)).astype(np.float32)
    xs, ys = [], []
    for index, start in enumerate(range(0, samples, SHARD_SAMPLES)):
        y = rng.integers(0, CLASSES, min(SHARD_SAMPLES, samples - start))
        x = (means[y] + rng.normal(size=(len(y), *SHAPE))).astype(np.float32)
        np.savez(directory / "shards" / f"train-{index:04d}.npz", x_train=x, y_train=y)
        xs.append(x)
        ys.append(y)
    y_test = rng.integers(0, CLASSES, 1000)
    x_test = (means[y_test] + rng.normal(size=(1000, *SHAPE))).astype(np.float32)
    np.savez(directory / "shards" / "test.npz", x_test=x_test, y_test=y_test)
    np.savez(directory / "whole.npz", x_train=np.concatenate(xs), y_train=np.concatenate(ys), x_test=x_test, y_test=y_test)


def run_case(data: str, epochs: int, seed: int) -> dict:
    """In this process: float training on `data`; peak memory and warm epoch time."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from bench.qat import EpochTimer
    from models import datasets, registry
    from models.training import Recipe, train_float

    dataset = datasets.load(data)
    keras.utils.set_random_seed(seed)
    model = registry.build("mnist1d_cnn", dataset.input_shape, dataset.num_classes)
    timer = EpochTimer()
    start = time.perf_counter()
    train_float(model, dataset, Recipe(float_epochs=epochs), seed=seed, callbacks=[timer])
    return {"samples": len(dataset.x_train), "streamed": dataset.shards is not None,
            "warm_epoch_seconds": timer.seconds, "total_seconds": time.perf_counter() - start,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measure(samples: int, scale: int, epochs: int, seed: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="softedge-streaming-") as tmp:
        for factor in (1, scale):
            directory = Path(tmp) / f"x{factor}"
            write_data(directory, samples * factor, seed)
            for kind, data in (("in memory", directory / "whole.npz"), ("shards", directory / "shards")):
                result = subprocess.run([sys.executable, "-m", "bench.streaming", "--case", str(data), "--epochs",
                                         str(epochs), "--seed", str(seed)], capture_output=True, text=True, check=True)
                row = {"data": f"{factor}x", "path": kind, **json.loads(result.stdout.strip().splitlines()[-1])}
                row["us_per_sample"] = 1e6 * row["warm_epoch_seconds"] / row["samples"]
                print(f"{row['data']:>4} {kind:<10} {row['samples']:>9,} samples: peak {row['peak_rss_mb']:,.0f} MB, "
                      f"{row['us_per_sample']:.2f} us/sample", flush=True)
                rows.append(row)
    return rows


def ratios(rows: list[dict], scale: int) -> dict:
    """The targets: shards at `scale`x vs at 1x, peak memory; shards vs in memory, time per
    sample (at each size); and, for contrast, in memory at `scale`x vs 1x, peak memory."""
    find = {(row["data"], row["path"]): row for row in rows}
    big = f"{scale}x"
    return {"shards_peak_memory_big_over_1x": find[(big, "shards")]["peak_rss_mb"] / find[("1x", "shards")]["peak_rss_mb"],
            "in_memory_peak_memory_big_over_1x": find[(big, "in memory")]["peak_rss_mb"] / find[("1x", "in memory")]["peak_rss_mb"],
            **{f"time_per_sample_shards_over_in_memory_{size}": find[(size, "shards")]["us_per_sample"]
               / find[(size, "in memory")]["us_per_sample"] for size in ("1x", big)}}


def table(rows: list[dict], summary: dict, scale: int) -> str:
    lines = ["| data | path | samples | peak memory (MB) | warm epoch (s) | us per sample |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['data']} | {row['path']} | {row['samples']:,} | {row['peak_rss_mb']:,.0f} | "
                     f"{row['warm_epoch_seconds']:.2f} | {row['us_per_sample']:.2f} |")
    lines += ["", f"Shards at {scale}x vs 1x the data: peak memory {summary['shards_peak_memory_big_over_1x']:.2f}x "
                  f"(target <= 1.2x; in memory: {summary['in_memory_peak_memory_big_over_1x']:.2f}x). Time per sample, "
                  f"shards vs in memory: {summary['time_per_sample_shards_over_in_memory_1x']:.2f}x at 1x, "
                  f"{summary[f'time_per_sample_shards_over_in_memory_{scale}x']:.2f}x at {scale}x (target <= 1.2x)."]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100_000, help="Samples at 1x.")
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--case", help=argparse.SUPPRESS)   # internal: one case, in this process
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args.case, args.epochs, args.seed)))
        return
    from bench.tables import replace_section
    from export.atomic import write_json

    rows = measure(args.samples, args.scale, args.epochs, args.seed)
    summary = ratios(rows, args.scale)
    write_json(RESULTS / "streaming.json", {"rows": rows, "summary": summary, "samples": args.samples,
                                            "scale": args.scale, "epochs": args.epochs, "seed": args.seed})
    text = table(rows, summary, args.scale)
    print(text)
    replace_section("streaming", text)


if __name__ == "__main__":
    main()
