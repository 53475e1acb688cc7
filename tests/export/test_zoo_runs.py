"""The zoo through the pipeline a user runs: `softedge train --model M --data synthetic` then
`softedge export`, with the task each model is made for (the autoencoder: ROC AUC)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from app.runs import RunConfig, export_run, read_config, train_run
from export.device.reference import probed_families
from models.training import Recipe
from tests.seeds import seeded
from toolkit import QuantScheme

MLPERF = ("ds_cnn", "resnet8", "mobilenet_v1_025", "fc_autoencoder", "mobilenet_v2_035")


def _assert_exported_exactly(report: dict) -> None:
    assert report["weights_exact"] is True
    for family in probed_families():
        assert report["reference"][family]["mismatched_elements"] == 0, family
    assert report["failures"] == [] and report["device"]["ok"] is True


@pytest.mark.slow   # 70 s; make test stays under 15 minutes
def test_the_autoencoder_trains_on_reconstruction_and_exports_with_its_roc_auc(tmp_path):
    run_dir = tmp_path / "ad"
    summary = train_run(RunConfig("fc_autoencoder", "synthetic", QuantScheme(weight_bits=4),
                                  Recipe(float_epochs=2, qat_epochs=1), seed=seeded(0)), run_dir)
    assert summary["task"] == "anomaly" and 0.0 <= summary["smooth_auc"] <= 1.0
    assert read_config(run_dir).task == "anomaly"  # the resolved task is the run's
    report, _ = export_run(run_dir)
    _assert_exported_exactly(report)
    assert set(report["error"]) == {"smooth", "hard", "tflite"} and "agreement" not in report
    manifest = json.loads((run_dir / "export" / "bundle" / "manifest.json").read_text())
    assert manifest["task"] == "anomaly" and manifest["expected_auc"] == pytest.approx(report["device"]["auc"])
    # The device computes its AUC from int8 inputs and outputs; LiteRT's float one from the same integers.
    assert np.isclose(report["device"]["auc"], report["by_kernels"]["xnnpack"]["auc"], atol=0.02)


def test_a_classifier_zoo_model_refuses_anomaly_data(tmp_path):
    from toolkit.errors import ConfigError

    with pytest.raises(ConfigError, match="made for classification"):
        train_run(RunConfig("ds_cnn", "synthetic:fc_autoencoder", QuantScheme(), Recipe(float_epochs=1, qat_epochs=1)),
                  tmp_path / "wrong")


@pytest.mark.slow
@pytest.mark.parametrize("name", MLPERF)
def test_softedge_train_and_export_on_synthetic_data(tmp_path, name):
    """The issue's done-when, with short training: both commands exit 0 and the export is exact."""
    run_dir = tmp_path / name
    softedge = [sys.executable, "-m", "app"]
    train = subprocess.run([*softedge, "train", "--model", name, "--data", "synthetic", "--weight-bits", "4",
                            "--float-epochs", "2", "--qat-epochs", "1", "--run", str(run_dir)],
                           capture_output=True, text=True, timeout=1800)
    assert train.returncode == 0, train.stderr[-2000:]
    export = subprocess.run([*softedge, "export", "--run", str(run_dir)], capture_output=True, text=True, timeout=1800)
    assert export.returncode == 0, export.stderr[-2000:]
    _assert_exported_exactly(json.loads((run_dir / "export" / "report.json").read_text()))
