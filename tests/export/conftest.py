import keras
import numpy as np
import pytest

from tests.seeds import seeded
from tests.toolkit.conftest import randomize_batch_norms, small_model
from toolkit import QuantScheme, quantize


def calibrated(kind: str, bits: int, **scheme):
    keras.utils.set_random_seed(seeded(bits))
    model = small_model(kind)
    randomize_batch_norms(model, seed=bits)
    x = np.random.default_rng(bits).normal(size=(128, *model.inputs[0].shape[1:])).astype(np.float32)
    return quantize(model, QuantScheme(weight_bits=bits, **scheme), calibration_data=x), x


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A digits run trained for a few epochs (fast), shared by the export tests."""
    from export.runs import RunConfig, train_run
    from models.training import Recipe

    run_dir = tmp_path_factory.mktemp("runs") / "digits-w4"
    train_run(RunConfig("digits_cnn", "digits", QuantScheme(weight_bits=4), Recipe(float_epochs=3, qat_epochs=2),
                        seed=seeded(0)), run_dir)
    return run_dir


@pytest.fixture(scope="session")
def exported_run(trained_run):
    from export.runs import export_run

    report, failures = export_run(trained_run, min_agreement=None)
    return trained_run, report, failures
