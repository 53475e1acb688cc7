"""TensorFlow's start-up lines stay off the terminal when softedge imports it first
(`toolkit.quiet`), and nothing else printed meanwhile is lost."""

import os
import subprocess
import sys

import pytest

from toolkit.quiet import STARTUP_NOISE

PROGRAM = ("from toolkit import quantize\nimport tensorflow as tf\nimport sys\n"
           "tf.constant(1.0) + 1.0\nprint('mine', file=sys.stderr)\n")


def _stderr(**env) -> str:
    environment = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=300,
                            env={**environment, **env})
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_the_start_up_lines_are_dropped_and_the_programs_own_are_kept():
    shown = [line for line in _stderr(SOFTEDGE_TF_STARTUP="show").splitlines() if STARTUP_NOISE.match(line)]
    if not shown:
        pytest.skip("TensorFlow prints no start-up lines on this machine: nothing to drop")
    lines = _stderr().splitlines()
    assert "mine" in lines
    assert [line for line in lines if STARTUP_NOISE.match(line)] == []


def test_the_noise_pattern_matches_tensorflows_start_up_lines_only():
    noise = ["WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
             "I0000 00:00:1796596426.066103   20459 port.cc:153] oneDNN custom operations are on.",
             "I0000 00:00:1796596426.066332   20459 cudart_stub.cc:31] Could not find cuda drivers on your machine",
             "E0000 00:00:1796596433.867390   20474 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error",
             "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the "
             "appropriate compiler flags."]
    kept = ["E0000 00:00:1796596433.867390   20474 op_kernel.cc:1830] OP_REQUIRES failed", "Traceback (most recent call last):",
            "I0000 00:00:1796599522.530232    3778 reader.cc:83] Reading SavedModel from: /tmp/tmpsp5nh25y",
            "mine"]
    assert all(STARTUP_NOISE.match(line) for line in noise)
    assert not any(STARTUP_NOISE.match(line) for line in kept)
