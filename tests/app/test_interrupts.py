"""Interrupting softedge: Ctrl-C (SIGINT) at any point of `softedge export` leaves the previous
export byte-identical (or, where there was none, no export), never a mix, and exits 130; a
training run replaced with --overwrite comes back whole when the new one is interrupted."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from app import cli
from export.device import check as device_check
from tests.app.test_bad_input import snapshot
from tests.helpers import default_sigint

pytestmark = pytest.mark.slow   # 20 interrupted exports, ~5 minutes

ROOT = Path(__file__).resolve().parents[2]
POINTS = 20


def _export(run: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "app", "export", "--run", str(run)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)


def _assert_whole(run: Path) -> None:
    """RUN/export is one complete export: its bundle's seal holds, its report names it."""
    export = run / "export"
    manifest = json.loads((export / "bundle" / "manifest.json").read_text())
    device_check.verify_files(str(export / "bundle"), manifest, "manifest.json")
    assert json.loads((export / "report.json").read_text())["written_to"] == str(export)


def test_sigint_at_20_points_of_an_export_never_leaves_a_mixed_export(exported_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(exported_run[0], run)
    start = time.perf_counter()
    finished = _export(run)
    assert finished.wait(600) == 0, finished.stderr.read()
    duration = time.perf_counter() - start
    _assert_whole(run)
    delays = np.random.default_rng(0).uniform(1.0, duration, POINTS)
    outcomes = []
    for point, delay in enumerate(delays):
        if point % 4 == 0:   # a quarter of the points start with no export at all
            shutil.rmtree(run / "export", ignore_errors=True)
        before = snapshot(run / "export")
        process = _export(run)
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        code = process.wait(600)
        stderr = process.stderr.read()
        if code == -signal.SIGINT:
            # Rarely (1 of 24 interrupts 1.4-2.4 s in, at c7de962 as now) the interpreter ends itself by
            # SIGINT after the command chose 130 and printed why; a shell reports that as 130 too.
            code = cli.EXIT_INTERRUPTED
        assert code in (cli.EXIT_INTERRUPTED, 0), stderr
        after = snapshot(run / "export")
        if after != before:   # the export had finished (or was renaming into place) when the signal came
            _assert_whole(run)
        if code == 130:
            assert any(line.startswith("Interrupted") for line in stderr.splitlines()) and "Traceback" not in stderr
        assert not [name for name in os.listdir(run) if name.startswith(".")], os.listdir(run)
        assert not (run / "export.failed").exists()
        outcomes.append((round(float(delay), 1), code, "unchanged" if after == before else "replaced whole"))
    assert any(code == 130 and what == "unchanged" for _, code, what in outcomes), outcomes


def _started(run: Path, before: dict) -> bool:
    """The new run has replaced the old one in place and written its config."""
    try:
        return (run / "config.json").is_file() and snapshot(run) != before
    except FileNotFoundError:   # caught mid-rename
        return False


def test_an_interrupted_overwrite_brings_the_old_run_back_whole(exported_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(exported_run[0], run)
    before = snapshot(run)
    process = subprocess.Popen([sys.executable, "-m", "app", "train", "--run", str(run), "--model", "mnist1d_cnn",
                                "--data", "mnist1d", "--float-epochs", "30", "--qat-epochs", "1", "--overwrite"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    deadline = time.monotonic() + 300
    while not _started(run, before):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    assert process.wait(300) == 130
    assert snapshot(run) == before
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")]
