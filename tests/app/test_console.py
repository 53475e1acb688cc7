"""The console: softedge's own lines on the terminal, library output in RUN/softedge.log."""

import subprocess
import sys
import textwrap

from app.cli import LOG_NAME

_NOISY = textwrap.dedent("""\
    import os, sys, warnings
    from app.console import routed_output
    log = sys.argv[1]
    with routed_output(log if log != "-" else None, verbose=sys.argv[2] == "1") as console:
        print("python stdout noise")
        sys.stderr.write("python stderr noise\\n")
        os.write(1, b"native fd1 noise\\n")
        os.write(2, b"native fd2 noise\\n")
        warnings.warn("a library warning")
        console.out.write("phase one\\n")
        console.err.write("progress\\n")
    print("after: stdout is the terminal again")
    """)


def _run(log, verbose="0"):
    return subprocess.run([sys.executable, "-c", _NOISY, str(log), verbose], capture_output=True, text=True, timeout=120)


def test_library_output_goes_to_the_log_and_softedge_output_to_the_terminal(tmp_path):
    log = tmp_path / "softedge.log"
    result = _run(log)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "phase one\nafter: stdout is the terminal again\n"
    assert result.stderr == "progress\n"
    logged = log.read_text()
    for noise in ("python stdout noise", "python stderr noise", "native fd1 noise", "native fd2 noise", "a library warning"):
        assert noise in logged


def test_verbose_also_shows_library_output_and_a_missing_directory_gets_no_log(tmp_path):
    result = _run(tmp_path / "absent" / "softedge.log", verbose="1")
    assert result.returncode == 0, result.stderr
    assert "native fd2 noise" in result.stderr and "python stdout noise" in result.stderr
    assert "native fd1 noise" not in result.stdout
    assert not (tmp_path / "absent").exists()


def test_softedge_export_prints_no_converter_or_tensorflow_noise(exported_run, tmp_path):
    """The issue's test: no "TensorSpec", "retracing" or "cuInit" in `softedge export`'s output;
    what the converter printed is in RUN/softedge.log instead."""
    run_dir, _, _ = exported_run
    result = subprocess.run([sys.executable, "-m", "app", "export", "--run", str(run_dir), "--output",
                             str(tmp_path / "out")], capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-2000:]
    printed = result.stdout + result.stderr
    for noise in ("TensorSpec", "retracing", "cuInit", "absl", "I0000", "W0000"):
        assert noise not in printed, noise
    assert "hardening ..." in result.stderr and "| accuracy |" in result.stdout
    assert "TensorSpec" in (run_dir / LOG_NAME).read_text()   # the converter's capture list, kept
