"""The exporter's acceptance checks (make test-slow)."""

import json
import subprocess
import sys

import pytest

from app.runs import ExportOptions, RunConfig, export_run, train_run
from models.training import Recipe
from toolkit import QuantScheme

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("weight_bits", [3, 8])
def test_mnist1d_int8_export_agrees_with_the_hard_model(tmp_path, weight_bits):
    run_dir = tmp_path / f"mnist1d-w{weight_bits}"
    train_run(RunConfig("mnist1d_cnn", "mnist1d", QuantScheme(weight_bits=weight_bits), Recipe(qat_epochs=10)), run_dir)
    report, failures = export_run(run_dir, ExportOptions(min_agreement=None))
    assert failures == []
    assert report["weights_exact"]
    # A float simulation vs integers: only a margin no machine's float kernels can move (the
    # measured gap is 0.0-0.2 points; exactness is asserted against the integer reference).
    assert report["accuracy"]["tflite"] >= report["accuracy"]["hard"] - 0.03


def test_device_check_runs_in_a_fresh_virtualenv_without_tensorflow(exported_run, tmp_path):
    run_dir, _, _ = exported_run
    venv = tmp_path / "device-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "ai-edge-litert", "numpy"], check=True, timeout=600)
    no_tf = subprocess.run([str(python), "-c", "import tensorflow"], capture_output=True)
    assert no_tf.returncode != 0  # the device has no TensorFlow
    bundle = run_dir / "export" / "bundle"
    result = subprocess.run([str(python), str(bundle / "check.py"), str(bundle), "--json"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ok"] is True


def test_micro_check_runs_in_a_fresh_virtualenv_with_only_numpy_and_tflite_micro(exported_run, tmp_path):
    """The issue's done-when: `python bundle/micro/check.py bundle/` in a virtualenv with only
    numpy and tflite-micro (and what tflite-micro itself requires)."""
    pytest.importorskip("tflite_micro", reason="tflite-micro has no wheel for this platform")
    run_dir, _, _ = exported_run
    venv = tmp_path / "micro-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--pre", "tflite-micro", "numpy"], check=True,
                   timeout=600)
    for absent in ("tensorflow", "ai_edge_litert"):
        assert subprocess.run([str(python), "-c", f"import {absent}"], capture_output=True).returncode != 0
    bundle = run_dir / "export" / "bundle"
    result = subprocess.run([str(python), str(bundle / "micro" / "check.py"), str(bundle), "--json"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    checked = json.loads(result.stdout)
    assert checked["ok"] is True and checked["outputs_equal"] is True and checked["mismatched_elements"] == 0
