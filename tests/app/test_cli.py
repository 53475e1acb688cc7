"""The CLI: commands, JSON output, exit codes, and bad input (message, exit code, no partial file)."""

import json
import zipfile

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from app import cli
from export.artifacts import load_keras_model
from tests.seeds import seeded
from toolkit.errors import ArtifactError

runner = CliRunner()


def invoke(*args):
    return runner.invoke(cli.main, [str(a) for a in args])


def leftovers(directory):
    """Temporary files an interrupted atomic write would leave behind."""
    return [p.name for p in directory.rglob(".*") if p.is_file() or p.is_dir()]


@pytest.mark.parametrize("command", ["train", "ptq", "plan", "export", "convert", "validate", "gradcheck"])
def test_every_command_has_help_with_an_example_and_a_seed(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert "Example:" in result.output and "--seed" in result.output and "--json" in result.output


def test_gradcheck_json():
    result = invoke("gradcheck", "--alphas", "0,3", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["max_error"] < 1e-5 and len(data["results"]) == 6


def test_export_json_and_validate_and_convert(exported_run, tmp_path):
    run_dir, _, _ = exported_run
    result = invoke("export", "--run", run_dir, "--output", tmp_path / "out", "--json", "--min-agreement", "0.5")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {"smooth", "hard", "tflite"} <= set(report["accuracy"])
    assert report["device"]["ok"]
    assert leftovers(tmp_path / "out") == []

    result = invoke("validate", "--hard", tmp_path / "out" / "hard.keras", "--tflite", tmp_path / "out" / "model.tflite",
                    "--data", "digits", "--max-drift", "0.0")
    assert result.exit_code == cli.EXIT_CHECK_FAILED
    assert "worst layer" in result.output

    result = invoke("convert", run_dir / "float.keras", "--data", "digits", "--output", tmp_path / "ptq.tflite", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["model_kind"] == "float"
    result = invoke("convert", run_dir / "smooth.keras", "--target", "int4-weights", "--output", tmp_path / "int4.tflite")
    assert result.exit_code == 0 and "quantized model" in result.output


# ---------------------------------------------------------------------- bad input


def test_missing_and_corrupt_model_files(tmp_path):
    result = invoke("convert", tmp_path / "absent.keras", "--output", tmp_path / "x.tflite")
    assert result.exit_code == cli.EXIT_ARTIFACT and "does not exist" in result.output
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"not a zip file")
    result = invoke("convert", corrupt, "--output", tmp_path / "x.tflite")
    assert result.exit_code == cli.EXIT_ARTIFACT and "corrupt" in result.output
    assert not (tmp_path / "x.tflite").exists() and leftovers(tmp_path) == []


def test_corrupt_tflite_and_npz(exported_run, tmp_path):
    run_dir, _, _ = exported_run
    bad_tflite = tmp_path / "bad.tflite"
    bad_tflite.write_bytes(b"\x00" * 64)
    result = invoke("validate", "--hard", run_dir / "export" / "hard.keras", "--tflite", bad_tflite, "--data", "digits")
    assert result.exit_code == cli.EXIT_ARTIFACT and "TFL3" in result.output
    bad_npz = tmp_path / "bad.npz"
    bad_npz.write_bytes(b"garbage")
    result = invoke("validate", "--hard", run_dir / "export" / "hard.keras", "--tflite", run_dir / "export" / "model.tflite",
                    "--data", bad_npz)
    assert result.exit_code == cli.EXIT_ARTIFACT and "is not an .npz file" in result.output


def test_dataset_that_does_not_fit_the_model_and_empty_dataset(exported_run, tmp_path):
    run_dir, _, _ = exported_run
    wrong = tmp_path / "wrong.npz"
    rng = np.random.default_rng(0)
    np.savez(wrong, x_train=rng.normal(size=(10, 40, 1)).astype(np.float32), y_train=np.zeros(10, int),
             x_test=rng.normal(size=(10, 40, 1)).astype(np.float32), y_test=np.zeros(10, int))
    args = ["validate", "--hard", run_dir / "export" / "hard.keras", "--tflite", run_dir / "export" / "model.tflite", "--data"]
    result = invoke(*args, wrong)
    assert result.exit_code == cli.EXIT_USAGE and "(40, 1)" in result.output and "(8, 8, 1)" in result.output
    empty = tmp_path / "empty.npz"
    np.savez(empty, x_train=np.zeros((0, 8, 8, 1), np.float32), y_train=np.zeros(0, int),
             x_test=np.zeros((0, 8, 8, 1), np.float32), y_test=np.zeros(0, int))
    result = invoke(*args, empty)
    assert result.exit_code == cli.EXIT_USAGE and "empty" in result.output
    # Float targets are regression (accepted); 2-D integer labels are neither labels nor targets.
    labels_2d = tmp_path / "labels2d.npz"
    np.savez(labels_2d, x_train=np.zeros((2, 8, 8, 1), np.float32), y_train=np.zeros((2, 3), np.int64),
             x_test=np.zeros((2, 8, 8, 1), np.float32), y_test=np.zeros((2, 3), np.int64))
    result = invoke(*args, labels_2d)
    assert result.exit_code == cli.EXIT_USAGE and "1-D class labels" in result.output


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--weight-bits", "9"], "Invalid value for '--weight-bits': 9 is not in the range 2<=x<=8"),
        (["--weight-bits", "1"], "1 is not in the range 2<=x<=8"),
        (["--rounding", "nearest"], "Invalid value for '--rounding': 'nearest' is not one of 'ste', 'soft', 'sigmoid'"),
        (["--model", "resnet"], "Unknown model 'resnet'"),
        (["--data", "imagenet"], "Unknown dataset 'imagenet'"),
    ],
)
def test_train_rejects_bad_options_before_writing_anything(tmp_path, options, message):
    result = invoke("train", "--run", tmp_path / "run", "--float-epochs", "1", "--qat-epochs", "1", "--seed", seeded(0),
                    *options)
    assert result.exit_code == cli.EXIT_USAGE
    assert message in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("tf_config", "options", "message"),
    [
        (None, ["--strategy", "multi-worker"], "TF_CONFIG environment variable, which is not set"),
        ("{not json", ["--strategy", "multi-worker"], "TF_CONFIG is not a cluster description"),
        ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}', ["--strategy", "multi-worker"],
         "task index 2 is outside the cluster's 2 workers"),
        (None, ["--resume"], "has no checkpoint to resume from"),
    ],
)
def test_train_rejects_a_bad_cluster_or_resume_before_writing_anything(tmp_path, monkeypatch, tf_config, options,
                                                                      message):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    result = invoke("train", "--run", tmp_path / "run", "--float-epochs", "1", "--qat-epochs", "1", "--seed", seeded(0),
                    *options)
    assert result.exit_code == cli.EXIT_USAGE
    assert message in result.output
    assert not (tmp_path / "run").exists()


def test_unwritable_output_directory(exported_run, tmp_path):
    run_dir, _, _ = exported_run
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = invoke("convert", run_dir / "smooth.keras", "--output", blocker / "model.tflite")
    assert result.exit_code == cli.EXIT_ARTIFACT and "Cannot write" in result.output


def test_model_needing_unsafe_deserialization_is_refused(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Lambda(lambda t: t * 2.0)])
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(ArtifactError, match="unsafe deserialization"):
        load_keras_model(path)
    result = invoke("convert", path, "--output", tmp_path / "x.tflite", "--target", "float32")
    assert result.exit_code == cli.EXIT_ARTIFACT and "Refused" in result.output


def test_export_of_a_directory_that_is_not_a_run(tmp_path):
    result = invoke("export", "--run", tmp_path)
    assert result.exit_code == cli.EXIT_ARTIFACT and "config.json" in result.output


def test_unsupported_layer_maps_to_its_exit_code():
    from toolkit.errors import UnsupportedLayerError

    assert cli._exit_code(UnsupportedLayerError("x")) == cli.EXIT_UNSUPPORTED


def test_keras_zip_without_config_is_reported_corrupt(tmp_path):
    path = tmp_path / "empty.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("nothing.txt", "")
    with pytest.raises(ArtifactError):
        load_keras_model(path)


@pytest.mark.parametrize(("variable", "value"), [("SOFTEDGE_FLOAT_EPOCHS", "0"), ("SOFTEDGE_QAT_EPOCHS", "many")])
def test_the_epoch_variables_are_checked_like_the_options_they_set(tmp_path, variable, value):
    result = runner.invoke(cli.main, ["train", "--run", str(tmp_path / "run")], env={variable: value})
    assert result.exit_code == cli.EXIT_USAGE
    assert f"(env var: '{variable}')" in result.output
    assert not (tmp_path / "run").exists()
