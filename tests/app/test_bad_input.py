"""The bad-input catalogue: nothing crashes, nothing is lost, nothing passes by accident.

Every case runs a `softedge` command (or a bundle's own check) on one kind of bad input and
asserts its documented exit code, a one-line message naming the problem, no traceback, and that
nothing was written: a fresh --run is not created, and an existing run or export is
byte-identical afterwards (softedge.log aside: it records every command, refused ones too).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from app import cli
from app.ownership import run_lock
from export.device import check as device_check
from export.device import micro_check
from models.data_checks import check_dataset
from models.datasets import Dataset
from tests.helpers import default_sigint
from toolkit.errors import SoftedgeError

USAGE, ARTIFACT = cli.EXIT_USAGE, cli.EXIT_ARTIFACT


def snapshot(root: Path) -> dict | None:
    """{relative path: sha256} of every file under `root` but the log; None when absent."""
    if not root.exists():
        return None
    return {path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file() and path.name != "softedge.log"}


def _digits_arrays():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[..., None]
    return x[:600], bunch.target[:600].astype(np.int64), x[1500:1600], bunch.target[1500:1600].astype(np.int64)


def _npz(path: Path, **changes) -> str:
    x_train, y_train, x_test, y_test = _digits_arrays()
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test, **changes}
    np.savez(path, **{key: value for key, value in arrays.items() if value is not None})
    return str(path)


def _with(array, index, value):
    array = array.copy()
    array[index] = value
    return array


def _nan_scale_tflite(tflite: bytes) -> bytes:
    """The model with its first quantized activation scale set to NaN (LiteRT segfaults on it)."""
    from export.tflite_file import read_model, write_model

    model = read_model(tflite)
    tensor = next(t for t in model.subgraphs[0].tensors
                  if t.quantization is not None and t.quantization.scale is not None and model.buffers[t.buffer].data is None)
    tensor.quantization.scale = [float("nan")] * len(tensor.quantization.scale)
    return write_model(model)


@pytest.fixture(scope="module")
def bad(tmp_path_factory, exported_run):
    """Every bad file of the catalogue, made once; `run` / `nan_run` are copies of a trained,
    exported run that the cases may try (and fail) to change."""
    from export.artifacts import load_keras_model, save_keras_model
    from export.tflite import convert

    run_dir = exported_run[0]
    root = tmp_path_factory.mktemp("bad")
    x_train, y_train, x_test, y_test = _digits_arrays()
    paths = {"root": root, "run": root / "run", "nan_run": root / "nan_run", "fresh": root / "fresh"}
    shutil.copytree(run_dir, paths["run"])
    shutil.copytree(run_dir, paths["nan_run"])
    shutil.rmtree(paths["nan_run"] / "export")
    smooth = load_keras_model(paths["nan_run"] / "smooth.keras")
    kernel = next(w for w in smooth.weights if "kernel" in w.path)
    kernel.assign(np.full(kernel.shape, np.nan, np.float32))
    save_keras_model(smooth, paths["nan_run"] / "smooth.keras")
    shutil.copyfile(run_dir / "float.keras", root / "user.keras")
    paths["user"] = str(root / "user.keras")
    paths["hard"] = str(run_dir / "export" / "hard.keras")
    paths["tflite"] = str(run_dir / "export" / "model.tflite")
    tflite = Path(paths["tflite"]).read_bytes()
    (root / "truncated.tflite").write_bytes(tflite[:len(tflite) // 2])
    (root / "nan_scale.tflite").write_bytes(_nan_scale_tflite(tflite))
    other = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(4)], name="other")
    (root / "other.tflite").write_bytes(convert(other, "float32"))
    regressor = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(1)], name="regressor")
    regressor.save(root / "regressor.keras")
    paths["regressor"] = str(root / "regressor.keras")
    nan_model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)], name="nan")
    nan_model.layers[-1].kernel.assign(np.full((64, 10), np.nan, np.float32))
    nan_model.save(root / "nan_weights.keras")
    (root / "corrupt.keras").write_bytes(np.random.default_rng(0).bytes(4000))
    (root / "random.npz").write_bytes(np.random.default_rng(1).bytes(4000))
    datasets = {
        "nan_x": {"x_train": _with(x_train, (3, 2, 2, 0), np.nan)},
        "inf_x_test": {"x_test": _with(x_test, (0, 0, 0, 0), np.inf)},
        "rank": {"x_train": x_train[..., 0], "x_test": x_test[..., 0]},
        "negative": {"y_train": _with(y_train, 5, -1)},
        "label57": {"y_train": _with(y_train, 5, 57)},
        "float_labels": {"y_train": y_train.astype(np.float32), "y_test": y_test.astype(np.float32)},
        "nan_targets": {"y_train": _with(y_train.astype(np.float32), 0, np.nan), "y_test": y_test.astype(np.float32)},
        "two_targets": {"y_train": np.zeros((600, 2), np.float32), "y_test": np.zeros((100, 2), np.float32)},
        "ten_by_ten": {"x_train": np.zeros((600, 10, 10, 1), np.float32), "x_test": np.zeros((100, 10, 10, 1), np.float32)},
        "empty_test": {"x_test": x_test[:0], "y_test": y_test[:0]},
        "one_sample": {"x_train": x_train[:1], "y_train": y_train[:1]},
        "rows_differ": {"y_train": y_train[:-1]},
        "strings": {"x_train": np.array(["a"] * 600)},
        "missing": {"y_test": None},
    }
    for name, changes in datasets.items():
        paths[name] = _npz(root / f"{name}.npz", **changes)
    paths["good"] = _npz(root / "good.npz")
    schemes = {"overrides_list": {"overrides": [1, 2]}, "per_channel_yes": {"per_channel": "yes"},
               "per_channel_false": {"per_channel": "false"}, "unknown_key": {"weight_bitz": 4},
               "no_layer": {"overrides": {"no_such_layer": {"weight_bits": 4}}}, "bits_string": {"weight_bits": "4"},
               "override_value": {"overrides": {"conv0": 8}}, "not_object": [4]}
    for name, scheme in schemes.items():
        (root / f"{name}.json").write_text(json.dumps(scheme))
        paths[f"scheme_{name}"] = str(root / f"{name}.json")
    (root / "not_json.json").write_text("{weight_bits: 4")
    paths["scheme_not_json"] = str(root / "not_json.json")
    return paths


TRAIN = ["train", "--run", "{fresh}", "--float-epochs", "1", "--qat-epochs", "1"]
VALIDATE = ["validate", "--hard", "{hard}", "--tflite", "{tflite}", "--data", "digits"]
PLAN = ["plan", "--model", "{user}", "--data", "{good}", "--output", "{fresh}/plan.json"]

# (id, arguments, exit code, message pattern, the directory that must be left as it was)
CASES = [
    # data sets, checked against the model and the task before any work
    ("nan-in-x-train", [*TRAIN, "--data", "{nan_x}"], USAGE, r"x_train holds non-finite values.*nan at index \[3, 2, 2, 0\]", "fresh"),
    ("inf-in-x-test", [*TRAIN, "--data", "{inf_x_test}"], USAGE, r"x_test holds non-finite.*inf", "fresh"),
    ("x-of-the-wrong-rank", [*TRAIN, "--data", "{rank}"], USAGE, r"cannot feed zoo model 'digits_cnn'", "fresh"),
    ("negative-label", [*TRAIN, "--data", "{negative}"], USAGE, r"negative label -1", "fresh"),
    ("label-57-among-ten-classes", [*TRAIN, "--data", "{label57}"], USAGE, r"labels go up to 57.*never occur", "fresh"),
    ("label-beyond-the-user-model", [*TRAIN, "--model", "{user}", "--data", "{label57}"], USAGE,
     r"label 57, but the model has 10 outputs", "fresh"),
    ("float-labels-for-a-classifier", [*TRAIN, "--model", "{user}", "--data", "{float_labels}"], USAGE,
     r"give integer labels", "fresh"),
    ("nan-regression-target", [*TRAIN, "--model", "{regressor}", "--data", "{nan_targets}"], USAGE,
     r"y_train holds non-finite values .* at index \[0\]", "fresh"),
    ("targets-of-another-shape-than-the-outputs", [*TRAIN, "--model", "{regressor}", "--data", "{two_targets}"], USAGE,
     r"regression targets of shape \(2,\) per sample, but the model outputs \(1,\)", "fresh"),
    ("inputs-the-user-model-cannot-take", [*TRAIN, "--model", "{user}", "--data", "{ten_by_ten}"], USAGE,
     r"\(10, 10, 1\) per sample; the model expects \(8, 8, 1\)", "fresh"),
    ("empty-test-split", [*TRAIN, "--data", "{empty_test}"], USAGE, r"empty test split", "fresh"),
    ("too-few-samples-to-anneal", [*TRAIN, "--data", "{one_sample}"], USAGE, r"annealing the rounding needs", "fresh"),
    ("rows-differ", [*TRAIN, "--data", "{rows_differ}"], USAGE, r"x_train has 600 rows but y_train has 599", "fresh"),
    ("string-inputs", [*TRAIN, "--data", "{strings}"], USAGE, r"expected numbers", "fresh"),
    ("npz-missing-an-array", [*TRAIN, "--data", "{missing}"], ARTIFACT, r"lacks array\(s\) \['y_test'\]", "fresh"),
    ("random-bytes-npz", [*TRAIN, "--data", "{root}/random.npz"], ARTIFACT, r"not an \.npz file", "fresh"),
    ("corrupt-keras", [*TRAIN, "--model", "{root}/corrupt.keras"], ARTIFACT, r"corrupt or not a Keras model", "fresh"),
    ("unknown-dataset", [*TRAIN, "--data", "imagenet"], USAGE, r"Unknown dataset 'imagenet'", "fresh"),
    # option ranges, answered by click before TensorFlow loads
    ("negative-seed", [*TRAIN, "--seed", "-5"], USAGE, r"'--seed': -5 is not in the range", "fresh"),
    ("negative-float-epochs", [*TRAIN, "--float-epochs", "-1"], USAGE, r"'--float-epochs' \(env var: 'SOFTEDGE_FLOAT_EPOCHS'\): -1", "fresh"),
    ("zero-qat-epochs", [*TRAIN, "--qat-epochs", "0"], USAGE, r"'--qat-epochs' \(env var: 'SOFTEDGE_QAT_EPOCHS'\): 0", "fresh"),
    ("negative-alpha-end", [*TRAIN, "--alpha-end", "-1"], USAGE, r"'--alpha-end': -1 is not > 0", "fresh"),
    ("nan-alpha-end", [*TRAIN, "--alpha-end", "nan"], USAGE, r"'--alpha-end': 'nan' is not a finite number", "fresh"),
    ("weight-bits-9", [*TRAIN, "--weight-bits", "9"], USAGE, r"'--weight-bits': 9 is not in the range 2<=x<=8", "fresh"),
    ("unknown-device-arithmetic", [*TRAIN, "--device-arithmetic", "ruy"], USAGE,
     r"'--device-arithmetic': 'ruy' is not one of 'xnnpack', 'none'", "fresh"),
    ("device-epochs-zero", [*TRAIN, "--device-arithmetic", "xnnpack", "--device-epochs", "0"], USAGE,
     r"'--device-epochs': 0 is not in the range x>=1", "fresh"),
    ("device-epochs-beyond-the-qat-epochs", [*TRAIN, "--device-arithmetic", "xnnpack", "--device-epochs", "2"], USAGE,
     r"device_epochs None or 1..qat_epochs \(1\)", "fresh"),
    # schemes, parsed against a typed schema
    ("scheme-overrides-a-list", [*TRAIN, "--scheme", "{scheme_overrides_list}"], USAGE, r"`overrides` to be an object", "fresh"),
    ("scheme-per-channel-yes", [*TRAIN, "--scheme", "{scheme_per_channel_yes}"], USAGE, r"`per_channel` to be true or false", "fresh"),
    ("scheme-per-channel-false-string", [*TRAIN, "--scheme", "{scheme_per_channel_false}"], USAGE,
     r"`per_channel` to be true or false. Received: 'false'", "fresh"),
    ("scheme-unknown-key", [*TRAIN, "--scheme", "{scheme_unknown_key}"], USAGE, r"Unknown QuantScheme field\(s\): \['weight_bitz'\]", "fresh"),
    ("scheme-override-naming-no-layer", [*TRAIN, "--scheme", "{scheme_no_layer}"], USAGE,
     r"override 'no_such_layer' matches no layer", "fresh"),
    ("scheme-bits-as-string", [*TRAIN, "--scheme", "{scheme_bits_string}"], USAGE, r"`weight_bits` to be an integer", "fresh"),
    ("scheme-override-not-an-object", [*TRAIN, "--scheme", "{scheme_override_value}"], USAGE,
     r"overrides\['conv0'\]` to be an object", "fresh"),
    ("scheme-not-an-object", [*TRAIN, "--scheme", "{scheme_not_object}"], USAGE, r"Expected a QuantScheme object", "fresh"),
    ("scheme-not-json", [*TRAIN, "--scheme", "{scheme_not_json}"], USAGE, r"not JSON", "fresh"),
    ("scheme-missing", [*TRAIN, "--scheme", "{root}/absent.json"], ARTIFACT, r"Cannot read the scheme", "fresh"),
    # runs are owned
    ("train-into-a-run-of-another-model", ["train", "--run", "{run}", "--model", "mnist1d_cnn", "--data", "mnist1d",
                                           "--float-epochs", "1", "--qat-epochs", "1"], USAGE,
     r"already holds a run of model 'digits_cnn'.*--overwrite", "run"),
    ("train-into-a-folder-of-other-files", ["train", "--run", "{root}", "--float-epochs", "1", "--qat-epochs", "1"], USAGE,
     r"already holds .* other file\(s\)", "root"),
    ("resume-without-a-checkpoint", [*TRAIN, "--resume"], USAGE, r"no checkpoint to resume from", "fresh"),
    ("train-into-an-unwritable-place", ["train", "--run", "{user}/run", "--float-epochs", "1", "--qat-epochs", "1"],
     ARTIFACT, r"Cannot write in .*user\.keras/run", "fresh"),
    ("ptq-of-a-zoo-name", ["ptq", "--model", "digits_cnn", "--run", "{fresh}"], USAGE, r"must be a \.keras file", "fresh"),
    ("ptq-of-nan-data", ["ptq", "--model", "{user}", "--data", "{nan_x}", "--run", "{fresh}"], USAGE, r"non-finite", "fresh"),
    # plan
    ("plan-budget-nan", [*PLAN, "--budget-kb", "nan"], USAGE, r"'--budget-kb': 'nan' is not a finite number", "fresh"),
    ("plan-budget-inf", [*PLAN, "--budget-kb", "inf"], USAGE, r"'--budget-kb': 'inf' is not a finite number", "fresh"),
    ("plan-budget-zero", [*PLAN, "--budget-kb", "0"], USAGE, r"'--budget-kb': 0 is not > 0", "fresh"),
    ("plan-budget-1e9", [*PLAN, "--budget-kb", "1e9"], USAGE, r"is not below model 'digits_cnn''s float32 size", "fresh"),
    ("plan-bits-empty", [*PLAN, "--budget-kb", "1", "--bits", ""], USAGE, r"names no width", "fresh"),
    ("plan-bits-9", [*PLAN, "--budget-kb", "1", "--bits", "4,9"], USAGE, r"width 9 is outside 2\.\.8", "fresh"),
    ("plan-bits-words", [*PLAN, "--budget-kb", "1", "--bits", "four"], USAGE, r"not comma-separated integers", "fresh"),
    ("plan-of-nan-data", [*PLAN, "--budget-kb", "1", "--data", "{nan_x}"], USAGE, r"non-finite", "fresh"),
    # export: gates that cannot pass by accident, models that would crash the runtime
    ("export-max-drift-nan", ["export", "--run", "{run}", "--max-drift", "nan"], USAGE, r"'--max-drift': 'nan'", "run"),
    ("export-min-agreement-nan", ["export", "--run", "{run}", "--min-agreement", "nan"], USAGE, r"'--min-agreement': 'nan'", "run"),
    ("export-min-agreement-above-one", ["export", "--run", "{run}", "--min-agreement", "2"], USAGE, r"2 is not <= 1", "run"),
    ("export-on-nan-data", ["export", "--run", "{run}", "--data", "{inf_x_test}"], USAGE, r"non-finite", "run"),
    ("export-of-nan-weights", ["export", "--run", "{nan_run}"], USAGE, r"non-finite value\(s\).*refusing to use it", "nan_run"),
    ("export-to-an-unwritable-place", ["export", "--run", "{run}", "--output", "{user}/export"], ARTIFACT,
     r"Cannot write", "run"),
    ("export-arena-budget-nan", ["export", "--run", "{run}", "--max-arena-kb", "nan"], USAGE,
     r"'--max-arena-kb': 'nan' is not a finite number", "run"),
    ("export-budget-for-a-float-target", ["export", "--run", "{run}", "--target", "float32", "--max-flash-kb", "64"],
     USAGE, r"apply to TFLite Micro, which runs integer models .* target 'float32' is not one", "run"),
    ("export-of-a-folder-that-is-no-run", ["export", "--run", "{fresh}"], ARTIFACT, r"config\.json does not exist", "fresh"),
    ("convert-nan-weights", ["convert", "{root}/nan_weights.keras", "--target", "float32", "--output", "{fresh}/x.tflite"],
     USAGE, r"layer 'dense\w*' weight .* non-finite", "fresh"),
    # gradcheck
    ("gradcheck-alpha-nan", ["gradcheck", "--alphas", "0,nan"], USAGE, r"'--alphas': 'nan' is not a finite number", "fresh"),
    ("gradcheck-alpha-negative", ["gradcheck", "--alphas", "-1"], USAGE, r"'--alphas': -1 is not >= 0", "fresh"),
    ("gradcheck-alphas-empty", ["gradcheck", "--alphas", ","], USAGE, r"names no number", "fresh"),
    ("gradcheck-eps-zero", ["gradcheck", "--eps", "0"], USAGE, r"'--eps': 0 is not > 0", "fresh"),
    ("gradcheck-tolerance-inf", ["gradcheck", "--tolerance", "inf"], USAGE, r"'--tolerance': 'inf' is not a finite", "fresh"),
    # validate
    ("validate-truncated-tflite", [*VALIDATE[:4], "{root}/truncated.tflite", *VALIDATE[5:]], ARTIFACT,
     r"not a valid TFLite model \(truncated or corrupt\)", "fresh"),
    ("validate-nan-scales", [*VALIDATE[:4], "{root}/nan_scale.tflite", *VALIDATE[5:]], USAGE,
     r"quantization scale nan; scales must be finite", "fresh"),
    ("validate-a-pair-that-does-not-belong", [*VALIDATE[:4], "{root}/other.tflite", *VALIDATE[5:]], USAGE,
     r"output shape \(10,\) per sample, the \.tflite \(4,\)", "fresh"),
    ("validate-min-agreement-nan", [*VALIDATE, "--min-agreement", "nan"], USAGE, r"'nan' is not a finite number", "fresh"),
    ("validate-nan-data", [*VALIDATE[:-1], "{inf_x_test}"], USAGE, r"x_test holds non-finite", "fresh"),
]


def _resolve(arguments, paths) -> list[str]:
    return [re.sub(r"\{(\w+)\}", lambda match: str(paths[match.group(1)]), argument) for argument in arguments]


def assert_one_line_error(result, code: int, pattern: str) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.output
    assert re.search(pattern, errors[0]), errors[0]


@pytest.mark.parametrize(("arguments", "code", "pattern", "watched"), [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_bad_input_is_refused_with_its_exit_code_and_nothing_changes(bad, arguments, code, pattern, watched):
    before = snapshot(Path(bad[watched]))
    result = CliRunner().invoke(cli.main, _resolve(arguments, bad))
    assert_one_line_error(result, code, pattern)
    assert snapshot(Path(bad[watched])) == before
    assert not list(Path(bad["root"]).glob(".*")), "a temporary directory was left behind"


def test_overwrite_replaces_another_run_whole_and_the_same_run_needs_none(bad, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(bad["run"], run)
    assert (run / "export").is_dir()
    train = ["train", "--run", str(run), "--data", bad["good"], "--float-epochs", "1", "--qat-epochs", "1", "--json"]
    result = CliRunner().invoke(cli.main, [*train, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert not (run / "export").exists()   # the old run's exports went with it
    assert json.loads((run / "config.json").read_text())["data"] == bad["good"]
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")]
    result = CliRunner().invoke(cli.main, train)   # the same run again: it is this run's directory
    assert result.exit_code == 0, result.output


def test_micro_budgets_apply_to_int4_weights_too(bad, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(bad["run"], run)
    result = CliRunner().invoke(cli.main, ["export", "--run", str(run), "--target", "int4-weights", "--max-arena-kb",
                                           "1024", "--max-flash-kb", "1024", "--no-device-check", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads((run / "export" / "report.json").read_text())
    assert report["target"] == "int4-weights" and report["micro"]["arena_bytes"] > 0


def test_a_zoo_model_rebuilt_for_other_data_says_so(bad, tmp_path):
    result = CliRunner().invoke(cli.main, ["train", "--run", str(tmp_path / "run"), "--data", bad["ten_by_ten"],
                                           "--float-epochs", "1", "--qat-epochs", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert "zoo model 'digits_cnn' is built for dataset 'ten_by_ten': input (10, 10, 1) (its default (8, 8, 1))" \
        in result.output


def _python(program: str, *arguments: str) -> subprocess.CompletedProcess:
    """`program` run by a fresh interpreter in the repository root (stdout and stderr captured)."""
    return subprocess.run([sys.executable, "-c", program, *arguments], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], timeout=120, preexec_fn=default_sigint)


def test_argument_errors_answer_before_tensorflow_is_imported(tmp_path):
    program = ("import sys\nfrom click.testing import CliRunner\nfrom app import cli\n"
               "result = CliRunner().invoke(cli.main, ['train', '--run', sys.argv[1], '--seed', '-5'])\n"
               "print(result.exit_code, 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    done = _python(program, str(tmp_path / "run"))
    assert done.stdout.split() == [str(USAGE), "False", "False"], done.stderr[-2000:]
    assert not (tmp_path / "run").exists()


def test_an_interrupt_while_tensorflow_is_imported_is_one_line_and_exit_130(tmp_path):
    # The error path itself must import nothing: toolkit's package imports TensorFlow, which a
    # Ctrl-C can leave half imported (seen in the SIGINT test: a traceback instead of 130).
    program = ("import builtins, sys\nfrom click.testing import CliRunner\nfrom app import cli\n"
               "real = builtins.__import__\n"
               "def interrupted(name, *args, **kwargs):\n"
               "    if name == 'tensorflow':\n        raise KeyboardInterrupt\n"
               "    return real(name, *args, **kwargs)\n"
               "builtins.__import__ = interrupted\n"
               "result = CliRunner().invoke(cli.main, ['gradcheck'])\n"
               "print(result.exit_code)\nprint(result.output)")
    done = _python(program)
    code, *output = done.stdout.splitlines()
    assert int(code) == cli.EXIT_INTERRUPTED, done.stdout + done.stderr[-2000:]
    assert [line for line in output if line.strip()] == [line for line in output if line.startswith("Interrupted")]
    assert "Traceback" not in done.stdout


def test_a_second_export_of_a_locked_run_exits_3_and_changes_nothing(bad):
    before = snapshot(bad["run"])
    with run_lock(bad["run"], "export"):
        result = CliRunner().invoke(cli.main, ["export", "--run", str(bad["run"])])
    assert_one_line_error(result, ARTIFACT, r"is being written by softedge export \(pid \d+\); wait")
    assert snapshot(bad["run"]) == before


def test_a_corrupt_checkpoint_is_refused_before_training(bad, tmp_path):
    from app.checkpoints import CHECKPOINT_DIR
    from app.runs import RunConfig, read_config

    run = tmp_path / "run"
    shutil.copytree(bad["run"], run)
    shutil.rmtree(run / "export")
    config = read_config(run)
    state = {"config": RunConfig.to_dict(config), "phase": "qat", "epochs_done": 1, "history": {},
             "variables": "variables-1.npz"}
    (run / CHECKPOINT_DIR).mkdir()
    (run / CHECKPOINT_DIR / "state.json").write_text(json.dumps(state))
    (run / CHECKPOINT_DIR / "variables-1.npz").write_bytes(b"PK\x03\x04 truncated")
    before = snapshot(run)
    recipe = config.recipe
    result = CliRunner().invoke(cli.main, ["train", "--run", str(run), "--weight-bits", "4", "--float-epochs",
                                           str(recipe.float_epochs), "--qat-epochs", str(recipe.qat_epochs),
                                           "--seed", str(config.seed), "--resume"])
    assert_one_line_error(result, ARTIFACT, r"variables-1\.npz is not a readable checkpoint archive")
    assert snapshot(run) == before


def test_an_unexpected_failure_is_one_line_with_exit_5_and_a_traceback_only_with_verbose(monkeypatch, tmp_path):
    import toolkit.gradcheck

    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(toolkit.gradcheck, "gradcheck_table", broken)
    result = CliRunner().invoke(cli.main, ["gradcheck"])
    assert result.exit_code == cli.EXIT_INTERNAL and "Traceback" not in result.output
    assert "softedge failed unexpectedly (ZeroDivisionError: division by zero); run with --verbose" in result.output
    result = CliRunner().invoke(cli.main, ["gradcheck", "--verbose"])
    assert result.exit_code == cli.EXIT_INTERNAL and "Traceback" in result.output


# ------------------------------------------------------------------ the sealed bundle


def _bundle_copy(exported_run, tmp_path) -> Path:
    bundle = tmp_path / "bundle"
    shutil.copytree(exported_run[0] / "export" / "bundle", bundle)
    return bundle


def _rewrite_eval(bundle: Path, **changes) -> None:
    with np.load(bundle / "eval.npz") as archive:
        arrays = {key: archive[key] for key in archive.files}
    arrays.update(changes)
    np.savez(bundle / "eval.npz", **arrays)


def _edit_manifest(bundle: Path, edit) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    edit(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def _relabel_with_predictions(bundle: Path) -> None:
    with np.load(bundle / "eval.npz") as archive:
        predictions = np.argmax(archive["expected_outputs"], axis=-1)
    _rewrite_eval(bundle, labels=predictions.astype(np.int64))


BUNDLE_CASES = [
    ("labels-replaced-by-predictions", _relabel_with_predictions, r"eval\.npz has sha256 .* the bundle was changed"),
    ("truncated-eval", lambda b: (b / "eval.npz").write_bytes((b / "eval.npz").read_bytes()[:300]), r"eval\.npz has sha256"),
    ("micro-model-changed", lambda b: (b / "micro" / "model_data.cc").write_text("{0x00}"), r"model_data\.cc has sha256"),
    ("manifest-without-files", lambda b: _edit_manifest(b, lambda m: m.pop("files")), r"lacks the entry 'files'"),
    ("manifest-without-tolerance", lambda b: _edit_manifest(b, lambda m: m.pop("tolerance")), r"lacks the entry 'tolerance'"),
    ("manifest-accuracy-a-string", lambda b: _edit_manifest(b, lambda m: m.update(expected_accuracy="high")),
     r"'expected_accuracy' is str 'high'; expected float or int or NoneType"),
    ("manifest-tolerance-nan", lambda b: _edit_manifest(b, lambda m: m["tolerance"].update(accuracy=float("nan"))),
     r"tolerance 'accuracy' is nan; expected a finite number"),
    ("manifest-not-json", lambda b: (b / "manifest.json").write_text("{"), r"not valid JSON"),
    ("manifest-a-list", lambda b: (b / "manifest.json").write_text("[1]"), r"is not a JSON object"),
    ("manifest-unknown-kernels", lambda b: _edit_manifest(b, lambda m: m.update(kernels="gpu")), r"kernels 'gpu'"),
    ("model-missing", lambda b: (b / "model.tflite").unlink(), r"model\.tflite is missing"),
]


@pytest.mark.parametrize(("tamper", "pattern"), [case[1:] for case in BUNDLE_CASES], ids=[case[0] for case in BUNDLE_CASES])
def test_check_py_refuses_a_bundle_that_is_not_the_sealed_one(exported_run, tmp_path, capsys, tamper, pattern):
    bundle = _bundle_copy(exported_run, tmp_path)
    assert device_check.main([str(bundle), "--latency-runs", "2"]) == device_check.EXIT_OK
    capsys.readouterr()
    tamper(bundle)
    assert device_check.main([str(bundle), "--latency-runs", "2"]) == device_check.EXIT_BAD_BUNDLE
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "Traceback" not in error and re.search(pattern, error), error


@pytest.mark.parametrize("tamper", [_relabel_with_predictions,
                                    lambda b: (b / "check.py").write_text((b / "check.py").read_text() + "\n# changed\n")],
                         ids=["labels-replaced-by-predictions", "check-py-changed"])
def test_the_micro_check_refuses_a_changed_bundle(exported_run, tmp_path, capsys, tamper):
    bundle = _bundle_copy(exported_run, tmp_path)
    tamper(bundle)
    assert micro_check.main([str(bundle), "--samples", "2"]) == micro_check.EXIT_BAD_BUNDLE
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "sha256" in error, error


def test_the_manifest_seals_every_file_of_the_bundle(exported_run):
    bundle = exported_run[0] / "export" / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    files = {path.relative_to(bundle).as_posix() for path in bundle.rglob("*")
             if path.is_file() and path.name != "manifest.json" and "__pycache__" not in path.parts}
    assert set(manifest["files"]) == files and {"eval.npz", "micro/model.tflite", "check.py"} <= files
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((bundle / name).read_bytes()).hexdigest() == digest


# ------------------------------------------------------------------ gates fail closed


def test_gates_fail_closed_on_non_finite_measurements():
    from export.validate import check
    from toolkit.errors import ConfigError

    report = {"agreement": {"hard_tflite": float("nan")}, "worst_layer": {"name": "relu0_quant", "error_steps": float("nan")},
              "output_error_steps": {"max": float("inf")}, "weights_exact": True, "runtime": {"kernels": "xnnpack"}}
    failures = check(report, max_drift=0.5, min_agreement=0.9)
    assert len(failures) == 3 and all("relu0_quant" in f or "finite" in f for f in failures)
    assert check(report) == []  # no gate asked for, none failed
    with pytest.raises(ConfigError, match="finite number for --max-drift"):
        check(report, max_drift=float("nan"))


def test_reports_are_strict_json_with_a_non_finite_value_as_null(tmp_path):
    from export.atomic import strict_json, write_json

    value = {"accuracy": {"hard": float("nan"), "tflite": 0.5}, "rows": [1.0, float("-inf")], "scalar": np.float32("nan")}
    clean, paths = strict_json(value)
    assert paths == ["accuracy.hard", "rows[1]", "scalar"]
    write_json(tmp_path / "report.json", value)
    text = (tmp_path / "report.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"accuracy": {"hard": None, "tflite": 0.5}, "rows": [1.0, None], "scalar": None}


# ------------------------------------------------------------------ the data-set check, as a property

_DTYPES = st.sampled_from([np.float32, np.float64, np.int64, np.int8, np.uint8, np.bool_, np.complex64])


@st.composite
def _datasets(draw):
    def array(rows):
        shape = draw(st.tuples(st.just(rows), *[st.integers(0, 3)] * draw(st.integers(0, 3))))
        return draw(hnp.arrays(draw(_DTYPES), shape, elements=None if draw(st.booleans()) else st.just(1)))

    rows = draw(st.integers(0, 6))
    arrays = [array(rows if draw(st.booleans()) else draw(st.integers(0, 6))) for _ in range(4)]
    if draw(st.booleans()):  # a scalar or a string array where an array of samples belongs
        arrays[draw(st.integers(0, 3))] = draw(st.sampled_from([np.float32(1.0), np.array(["a", "b"])]))
    return Dataset("drawn", *arrays)


@given(data=_datasets(), task=st.sampled_from(["classification", "regression", "anomaly"]),
       input_shape=st.none() | st.tuples(st.integers(1, 3), st.integers(1, 3)), classes=st.none() | st.integers(1, 5),
       steps=st.none() | st.tuples(st.integers(1, 64), st.integers(1, 3)))
def test_the_data_set_check_raises_nothing_but_softedge_errors(data, task, input_shape, classes, steps):
    try:
        check_dataset(data, task, input_shape=input_shape, classes=classes, min_train_steps=steps)
    except SoftedgeError as error:
        assert str(error) and "\n" not in str(error)


def test_an_interrupt_is_one_line_even_when_the_code_it_cut_short_fails_to_clean_up():
    # A Ctrl-C while TensorFlow traces a function leaves its graph's context managers to be
    # finalized at exit, where they raise (seen in the SIGINT test: "Exception ignored in ...
    # Traceback ... TypeError" after the "Interrupted" line). A real SIGINT, through `entry`.
    program = ("import os, signal, sys\nfrom app import cli\n"
               "def graph_scope():\n    try:\n        yield\n    finally:\n        raise TypeError('half-built graph')\n"
               "@cli.main.command('cut-short')\n@cli.handles_errors\ndef cut_short():\n    global pending\n"
               "    pending = graph_scope()\n    next(pending)\n    os.kill(os.getpid(), signal.SIGINT)\n"
               "sys.argv = ['softedge', 'cut-short']\ncli.entry()\n")
    done = _python(program)
    assert done.returncode == cli.EXIT_INTERRUPTED, done.stderr[-2000:]
    assert [line for line in done.stderr.splitlines() if line.strip()] == [cli.one_line(KeyboardInterrupt())], done.stderr


def test_handling_an_interrupt_leaves_the_callers_unraisable_hook_and_signal_handlers_as_they_were():
    import signal

    hook, sigint = sys.unraisablehook, signal.getsignal(signal.SIGINT)

    @cli.handles_errors
    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exited:
        interrupted()
    assert exited.value.code == cli.EXIT_INTERRUPTED
    assert sys.unraisablehook is hook and signal.getsignal(signal.SIGINT) is sigint


def test_an_interrupt_that_pybind11_turned_into_a_runtime_error_is_an_interrupt():
    error = RuntimeError("pybind11::error_already_set: MISMATCH of original and normalized active exception types: "
                         "ORIGINAL InvalidArgumentError REPLACED BY KeyboardInterrupt: <EMPTY MESSAGE>")
    assert cli._exit_code(error) == cli.EXIT_INTERRUPTED and cli.one_line(error).startswith("Interrupted")
    other = RuntimeError("pybind11::error_already_set: something else")
    assert cli._exit_code(other) == cli.EXIT_INTERNAL
