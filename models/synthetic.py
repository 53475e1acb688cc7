"""Learnable synthetic stand-ins for the zoo's real data sets (`--data synthetic`), generated
locally from a fixed seed (part of the data set, like a split): same shapes, same task.

Classification (`class_patterns`): class c has a smooth random template T_c (Gaussian noise on
a grid 4x coarser than the input, linearly upsampled, unit variance). A sample of class c is
    x = a * shift(T_c) + 0.8 * B + sigma * N(0, 1),
with a ~ U(0.6, 1.4), `shift` a circular shift along the first axis (time for MFCCs, rows for
images) of up to 1/8 of its length, B a per-sample mixture of 6 smooth distractor fields shared
by all classes, and sigma = 1.5 (pixel noise). Images are mapped into [0, 1] as
clip(0.5 + 0.15 x, 0, 1). The class is in the template's shape, not in any single value, so
a model must learn spatial features; the noise keeps short training away from 100%.

Anomaly detection (`machine_sounds`): 5 frames x 128 log-mel bands, flattened frame-major as
the MLPerf Tiny AD inputs. A normal sound is a base spectrum plus 4 smooth band profiles with
Gaussian weights (slowly drifting over the frames) plus noise 0.1: it lies near a
4-dimensional subspace, which an 8-wide bottleneck can learn. An anomalous one (a worn part)
adds, to every frame, a fifth smooth profile outside that subspace with weight +-U(0.3, 1.0)
and a narrow peak (a squeak: Gaussian over 3 bands, height U(0.5, 1.5), at a random band).
Training data is normal only; the test split is 2/3 normal, 1/3 anomalous (y 1).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["SEED", "class_patterns", "machine_sounds", "sample_counts"]

SEED = 1234


def sample_counts(input_shape) -> tuple[int, int]:
    """(train, test) sizes: 2400 / 600 for small inputs, 1000 / 250 for 96x96 images (110 KB each)."""
    return (1000, 250) if int(np.prod(input_shape)) > 10_000 else (2400, 600)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Unit-variance smooth noise: normal on a grid 4x coarser in the spatial axes, upsampled."""
    spatial = shape[:-1] if len(shape) > 1 else shape
    coarse_shape = tuple(max(2, -(-n // 4)) for n in spatial) + tuple(shape[len(spatial):])
    coarse = rng.normal(size=coarse_shape)
    zoom = [n / c for n, c in zip(shape, coarse_shape, strict=True)]
    field = ndimage.zoom(coarse, zoom, order=1, mode="nearest")[tuple(slice(0, n) for n in shape)]
    return ((field - field.mean()) / (field.std() + 1e-12)).astype(np.float32)


def class_patterns(input_shape, num_classes: int, images: bool, seed: int = SEED):
    """(x_train, y_train, x_test, y_test); see the module docstring."""
    input_shape = tuple(input_shape)
    rng = np.random.default_rng(seed)
    templates = np.stack([_smooth_field(rng, input_shape) for _ in range(num_classes)])
    distractors = np.stack([_smooth_field(rng, input_shape) for _ in range(6)])
    max_shift = max(1, input_shape[0] // 8)

    def samples(count):
        y = rng.integers(0, num_classes, size=count)
        x = np.empty((count, *input_shape), np.float32)
        for i, label in enumerate(y):
            shifted = np.roll(templates[label], rng.integers(-max_shift, max_shift + 1), axis=0)
            background = np.tensordot(rng.normal(size=len(distractors)) / np.sqrt(len(distractors)), distractors, 1)
            x[i] = rng.uniform(0.6, 1.4) * shifted + 0.8 * background + 1.5 * rng.normal(size=input_shape)
        if images:
            x = np.clip(0.5 + 0.15 * x, 0.0, 1.0)
        return x.astype(np.float32), y.astype(np.int64)

    train, test = sample_counts(input_shape)
    return (*samples(train), *samples(test))


def machine_sounds(input_shape=(640,), frames: int = 5, seed: int = SEED):
    """(x_train, y_train, x_test, y_test) for an autoencoder; see the module docstring."""
    dim = int(np.prod(input_shape))
    if dim % frames:
        raise ValueError(f"An input of {dim} values is not {frames} frames of equal length.")
    bands = dim // frames
    rng = np.random.default_rng(seed)
    axis = np.arange(bands)
    base = np.linspace(1.0, -1.0, bands) + 0.3 * _smooth_field(rng, (bands,))
    profiles = np.stack([_smooth_field(rng, (bands,)) for _ in range(4)]) * 0.5
    wear = _smooth_field(rng, (bands,)) * 0.5

    def sounds(count, anomalous):
        weights = rng.normal(size=(count, 1, 4)) + 0.1 * rng.normal(size=(count, frames, 4)).cumsum(axis=1)
        x = base + weights @ profiles + 0.1 * rng.normal(size=(count, frames, bands))
        for i in np.flatnonzero(anomalous):
            centre = rng.uniform(0, bands - 1)
            x[i] += rng.choice((-1, 1)) * rng.uniform(0.3, 1.0) * wear
            x[i] += rng.uniform(0.5, 1.5) * np.exp(-0.5 * ((axis - centre) / 1.5) ** 2)
        return x.reshape(count, *input_shape).astype(np.float32)

    train, test = sample_counts(input_shape)
    y_test = (rng.random(test) < 1 / 3).astype(np.int64)
    return sounds(train, np.zeros(train, bool)), np.zeros(train, np.int64), sounds(test, y_test.astype(bool)), y_test
