"""Your own model: `softedge train --model my.keras` quantizes and fine-tunes a trained float
Keras 3 model (no float training), classification or regression, and `softedge export` works on
the run."""

import json

import keras
import numpy as np
from click.testing import CliRunner

from app.cli import main
from app.runs import ExportOptions, RunConfig, export_run, train_run
from models.training import Recipe
from tests.seeds import seeded
from toolkit import QuantScheme

L = keras.layers


def _npz(path, x, y):
    split = len(x) * 3 // 4
    np.savez(path, x_train=x[:split], y_train=y[:split], x_test=x[split:], y_test=y[split:])
    return path


def test_a_user_classifier_ending_in_softmax_trains_and_exports_through_the_cli(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 8, 8, 1)).astype(np.float32)
    y = (x[:, :4].mean(axis=(1, 2, 3)) > 0).astype(np.int64)  # learnable: top half brighter or not
    keras.utils.set_random_seed(seeded(0))
    inputs = keras.Input((8, 8, 1))
    hidden = L.GlobalAveragePooling2D()(L.Conv2D(8, 3, activation="relu")(inputs))
    model = keras.Model(inputs, L.Dense(2, activation="softmax")(hidden), name="users_model")
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, verbose=0)
    model_path = tmp_path / "mine.keras"
    model.save(model_path)
    data = _npz(tmp_path / "mine.npz", x, y)
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--model", str(model_path), "--data", str(data), "--weight-bits", "4",
                                       "--qat-epochs", "1", "--run", str(run), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["task"] == "classification" and 0.0 <= summary["smooth_accuracy"] <= 1.0
    saved_float = keras.saving.load_model(run / "float.keras")
    for mine, saved in zip(model.get_weights(), saved_float.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, saved)  # float training skipped: the user's weights as given
    assert json.loads((run / "history.json").read_text())["float"] == {}
    result = CliRunner().invoke(main, ["export", "--run", str(run), "--no-device-check", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads((run / "export" / "report.json").read_text())
    assert report["weights_exact"] and all(row["outputs_equal"] for row in report["reference"].values())


def test_a_user_regression_model_trains_and_exports(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 16)).astype(np.float32)
    keras.utils.set_random_seed(seeded(1))
    inputs = keras.Input((16,))
    model = keras.Model(inputs, L.Dense(16)(L.Dense(6, activation="relu")(inputs)), name="autoencoder")
    model.compile("adam", "mse")
    model.fit(x, x, epochs=2, verbose=0)
    model.save(tmp_path / "ae.keras")
    data = _npz(tmp_path / "signals.npz", x, x)
    config = RunConfig(str(tmp_path / "ae.keras"), str(data), QuantScheme(weight_bits=8), Recipe(qat_epochs=1), seed=seeded(0))
    summary = train_run(config, tmp_path / "run")
    assert summary["task"] == "regression" and summary["smooth_mse"] >= 0 and "smooth_accuracy" not in summary
    report, failures = export_run(tmp_path / "run", ExportOptions(device_check=False))
    assert failures == [] and report["task"] == "regression" and report["weights_exact"]
    assert all(row["outputs_equal"] for row in report["reference"].values())
