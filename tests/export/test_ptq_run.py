"""`softedge ptq` then `softedge export`: a trained float model quantized post-training (nearest
or AdaRound), exported with the integers it chose, and `--scheme` from a JSON file."""

import json

import keras
import numpy as np
from click.testing import CliRunner

from app.cli import EXIT_USAGE, main
from app.runs import ExportOptions, export_run
from export.artifacts import load_keras_model
from tests.seeds import seeded
from toolkit import QuantScheme
from toolkit.rewrite import quantized_layers

L = keras.layers


def _float_model(tmp_path):
    """A small trained classifier with a BN to fold, and its data as an .npz."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 12, 2)).astype(np.float32)
    y = (x[:, :6, 0].mean(axis=1) > x[:, 6:, 1].mean(axis=1)).astype(np.int64)
    keras.utils.set_random_seed(seeded(0))
    inputs = keras.Input((12, 2))
    h = L.ReLU()(L.BatchNormalization()(L.Conv1D(8, 3, use_bias=False, name="conv")(inputs)))
    model = keras.Model(inputs, L.Dense(2, name="logits")(L.Flatten()(h)), name="ptq_me")
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=3, verbose=0)
    model.save(tmp_path / "float.keras")
    np.savez(tmp_path / "data.npz", x_train=x[:200], y_train=y[:200], x_test=x[200:], y_test=y[200:])
    return tmp_path / "float.keras", tmp_path / "data.npz"


def test_ptq_then_export_stores_the_chosen_integers(tmp_path):
    model_path, data = _float_model(tmp_path)
    (tmp_path / "scheme.json").write_text(QuantScheme(weight_bits=3, overrides={"logits": {"weight_bits": 8}}).to_json())
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["ptq", "--model", str(model_path), "--data", str(data), "--scheme",
                                       str(tmp_path / "scheme.json"), "--samples", "64", "--iterations", "300",
                                       "--run", str(run), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{"):])
    assert summary["method"] == "ptq-adaround" and [layer["layer"] for layer in summary["layers"]] == ["conv", "logits"]
    assert [layer["bits"] for layer in summary["layers"]] == [3, 8]
    history = json.loads((run / "history.json").read_text())["ptq"]
    assert [it for it, _ in history[0]["losses"]] == [300]
    config = json.loads((run / "config.json").read_text())
    assert config["ptq"]["rounding"] == "adaround" and config["ptq"]["samples"] == 64

    smooth = load_keras_model(run / "smooth.keras")
    report, failures = export_run(run, ExportOptions(device_check=False))
    assert failures == [] and report["weights_exact"] is True   # the .tflite holds these integers
    for layer in quantized_layers(smooth):
        step = np.asarray(layer.weight_quantizer.scale(layer.float_kernel))
        integers = layer.weight_quantizer.integers(layer.float_kernel).numpy()
        np.testing.assert_allclose(layer.float_kernel.numpy(), step * integers, rtol=1e-6)   # on the grid
    assert report["accuracy"]["tflite"] == report["accuracy"]["hard"] == summary["smooth_accuracy"]


def test_ptq_refuses_a_zoo_name_and_a_bad_scheme_file(tmp_path):
    model_path, data = _float_model(tmp_path)
    result = CliRunner().invoke(main, ["ptq", "--model", "digits_cnn", "--run", str(tmp_path / "a")])
    assert result.exit_code == EXIT_USAGE and "must be a .keras file" in result.output
    (tmp_path / "bad.json").write_text('{"weight_bits": 9}')
    result = CliRunner().invoke(main, ["ptq", "--model", str(model_path), "--data", str(data), "--scheme",
                                       str(tmp_path / "bad.json"), "--run", str(tmp_path / "b")])
    assert result.exit_code == EXIT_USAGE and "bad.json" in result.output and "weight_bits" in result.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_plan_writes_a_scheme_that_train_and_ptq_take(tmp_path):
    model_path, data = _float_model(tmp_path)
    scheme_path = tmp_path / "plan.json"
    # conv: 48 weights, logits: 160; 8 bits everywhere is 208 bytes, 4 bits 24 + 80 = 104.
    result = CliRunner().invoke(main, ["plan", "--model", str(model_path), "--data", str(data), "--budget-kb",
                                       str(130 / 1024), "--bits", "4,8", "--samples", "64", "--output", str(scheme_path),
                                       "--json"])
    assert result.exit_code == 0, result.output
    planned = json.loads(result.output[result.output.index("{"):])
    assert planned["bytes"] <= 130 and sorted(layer["bits"] for layer in planned["layers"]) == [4, 8]
    scheme = QuantScheme.from_json(scheme_path.read_text())
    widths = {layer["layer"]: layer["bits"] for layer in planned["layers"]}
    assert {name: scheme.for_layer(name).weight_bits for name in widths} == widths

    result = CliRunner().invoke(main, ["train", "--model", str(model_path), "--data", str(data), "--scheme",
                                       str(scheme_path), "--qat-epochs", "1", "--run", str(tmp_path / "qat"), "--json"])
    assert result.exit_code == 0, result.output
    trained = load_keras_model(tmp_path / "qat" / "smooth.keras")
    assert {layer.name: layer.weight_quantizer.bits for layer in quantized_layers(trained)} == widths
