"""A bundle's own check, run as a separate process the way a device runs it, and its `--json`
result read back: on this machine (`app.runs.run_device_check`) or on an emulated ARM64 device
(`app.arm64.run_check`)."""

from __future__ import annotations

import json
import subprocess

__all__ = ["run_bundle_check"]


def run_bundle_check(command, env=None, timeout: int = 1800) -> dict:
    """The JSON a bundle check prints (exit 0: ok, 1: out of tolerance), or {"ok": False,
    "failures": [its last line of stderr]} when it could not check (a bad bundle, a crash)."""
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=timeout, env=env)
    if result.returncode not in (0, 1):
        last = result.stderr.strip().splitlines()[-1:] or [f"exit code {result.returncode}"]
        return {"ok": False, "failures": [last[0]]}
    return json.loads(result.stdout)
