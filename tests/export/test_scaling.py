"""`softedge train` on two workers (two local processes, 127.0.0.1) and after a kill (make test-slow)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from export.artifacts import load_keras_model

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ["train", "--model", "digits_cnn", "--data", "digits", "--weight-bits", "4", "--float-epochs", "2",
         "--qat-epochs", "1", "--seed", "1", "--json"]


def _softedge(*args, env=None, **kwargs):
    """`python -m export ARGS` with oneDNN's kernels off. They pick their blocking (so their
    summation order) by batch size, and a worker's half batch (32) sums otherwise than the whole
    (64): on an AVX-512 machine that alone put the two-worker float weights 4e-3 of a layer's
    largest value from one worker's after 46 steps (Adam turns reassociation noise in near-zero
    gradients into whole steps); with Eigen's kernels, 3e-6 (and 8e-5 with oneDNN on an AVX2 one)."""
    env = {"TF_ENABLE_ONEDNN_OPTS": "0", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "app", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **env}, **kwargs)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _finished(process, timeout=900):
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out)


def _largest_difference(expected, actual) -> float:
    """max over variables of max|actual - expected| / (the largest |value| among its layer's
    variables in `expected`): a kernel's own scale, an activation range's span."""
    layer_scale = {}
    for variable in expected.weights:
        layer = variable.path.split("/")[0]
        layer_scale[layer] = max(layer_scale.get(layer, 0.0), float(np.max(np.abs(variable.numpy()))))
    return max(float(np.max(np.abs(b.numpy() - a.numpy()))) / max(layer_scale[a.path.split("/")[0]], 1e-6)
               for a, b in zip(expected.weights, actual.weights, strict=True))


def test_two_local_workers_train_the_model_one_worker_trains(tmp_path):
    """The same global batch (64) and data order: worker k computes the gradient of its half
    of each batch and the halves are summed. Not bit for bit: the sums run in another order
    (the BN moments as E[x^2] - E[x]^2 across workers), 1e-7 apart after one step, and training
    amplifies that. Measured (seed 1, oneDNN off: `_softedge`), as a fraction of the layer's largest
    value: float.keras 3e-6 after 46 steps (8e-5 with oneDNN on an AVX2 machine); smooth.keras 6e-5
    after 23 more (1.8e-3), where the annealed rounding's slope
    (alpha/4 near half-integers, alpha up to 1e4) magnifies any difference; the loss curves
    within 2e-5 relative. So: float weights within 1e-3, the quantized model's within 1e-2, the
    loss curves of both phases within 1e-3 relative. Without the global-batch loss, synchronized
    BN and gathered activation ranges (toolkit.distribute) the float weights differ by 1e-2."""
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    two = tmp_path / "two"
    processes = [_softedge(*TRAIN, "--run", str(two), "--strategy", "multi-worker",
                           env={"TF_CONFIG": json.dumps({"cluster": {"worker": workers},
                                                         "task": {"type": "worker", "index": index}})})
                 for index in range(2)]
    chief, other = (_finished(process) for process in processes)
    one = _finished(_softedge(*TRAIN, "--run", str(tmp_path / "one")))

    assert chief["workers"] == 2 and chief["replicas"] == 2 and one["workers"] == 1
    assert chief["run"] == str(two) and other["run"] == str(two / "worker-1")
    print(f"seconds per epoch (float, QAT): one worker {one['seconds_per_epoch']}, "
          f"two local workers {chief['seconds_per_epoch']}")
    for name in ("float", "smooth"):
        single = load_keras_model(tmp_path / "one" / f"{name}.keras")
        for path in (two, two / "worker-1"):
            difference = _largest_difference(single, load_keras_model(path / f"{name}.keras"))
            print(f"{path.name}/{name}.keras: largest difference {difference:.2e} of its layer's largest value")
            assert difference <= {"float": 1e-3, "smooth": 1e-2}[name]
    histories = [json.loads((path / "history.json").read_text()) for path in (tmp_path / "one", two)]
    for phase in ("float", "qat"):
        one_loss, two_loss = (np.asarray(history[phase]["loss"]) for history in histories)
        print(f"{phase} loss curve: largest relative difference {np.max(np.abs(two_loss / one_loss - 1)):.1e}")
        np.testing.assert_allclose(two_loss, one_loss, rtol=1e-3)


def test_a_killed_run_resumes_to_the_result_of_a_run_never_killed(tmp_path):
    whole = _finished(_softedge(*TRAIN, "--run", str(tmp_path / "whole")))
    run = tmp_path / "killed"
    process = _softedge(*TRAIN, "--run", str(run), start_new_session=True)
    state = run / "checkpoint" / "state.json"
    deadline = time.monotonic() + 600
    while not (state.is_file() and json.loads(state.read_text())["phase"] == "qat") and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)   # mid-run, as a lost machine would stop it
    process.communicate()
    assert not (run / "summary.json").exists()
    resumed = _finished(_softedge(*TRAIN, "--run", str(run), "--resume"))

    assert resumed["resumed_from"]["phase"] == "qat"
    assert resumed["smooth_accuracy"] == whole["smooth_accuracy"]
    for name in ("float", "smooth"):
        expected, actual = load_keras_model(tmp_path / "whole" / f"{name}.keras"), load_keras_model(run / f"{name}.keras")
        for a, b in zip(expected.weights, actual.weights, strict=True):
            np.testing.assert_array_equal(b.numpy(), a.numpy(), err_msg=f"{name}: {a.path}")
