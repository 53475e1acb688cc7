import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def test_mirrored_strategy_trains_a_quantized_model_on_two_devices():
    result = subprocess.run(
        [sys.executable, "-m", "tests.toolkit.mirrored_worker"], cwd=ROOT, capture_output=True, text=True,
        timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert np.isfinite(report["loss"]).all()
    assert report["changed"] and report["replicas_agree"]
    assert report["range_max"] > 0
    assert report["alpha"] == [2.5, 4.5]  # linear 1 -> 5 over 8 steps, at steps 3 and 7
    # Two replicas train as one device on the global batch (an uneven last batch, BN, activation
    # ranges): the same variables up to float rounding. Without GlobalBatchMean, synchronized BN and
    # the gathered ranges the differences are 1e-3..1e-2 (measured on digits_cnn, two workers).
    assert report["float_difference"] < 1e-5 and report["quantized_difference"] < 1e-5, report
