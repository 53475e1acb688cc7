import keras
import numpy as np

from tests.seeds import seeded
from tests.toolkit.conftest import randomize_batch_norms, small_model
from toolkit import QuantScheme, quantize


def calibrated(kind: str, bits: int, **scheme):
    keras.utils.set_random_seed(seeded(bits))
    model = small_model(kind)
    randomize_batch_norms(model, seed=bits)
    x = np.random.default_rng(bits).normal(size=(128, *model.inputs[0].shape[1:])).astype(np.float32)
    return quantize(model, QuantScheme(weight_bits=bits, **scheme), calibration_data=x), x
