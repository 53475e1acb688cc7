#!/usr/bin/env python3
"""Every tensor LiteRT computes for a set of models: how a device's kernels are probed.
Needs only numpy and LiteRT (and check.py beside it), like check.py.

    python tensors.py DIRECTORY --kernels builtin

For each NAME.tflite in DIRECTORY with its inputs NAME.npy (exactly as the device receives them,
batch first), runs one batched invoke with the kernels and writes NAME.KERNELS.npz: every tensor
the interpreter keeps, by index ("reference" and "builtin" keep every op's output with
preserve-all-tensors; "xnnpack", a delegate, its outputs only). A model LiteRT cannot load or
run writes NAME.KERNELS.error.txt with the reason instead. `app.arm64.run_tensors` runs it on
an emulated ARM64 CPU; the integer reference's families are pinned against what it writes.
"""

from __future__ import annotations

import argparse
import functools
import glob
import importlib.util
import os
import sys

import numpy as np


@functools.cache
def _check_module():
    """check.py: the package's, or the one beside this file (loaded by path)."""
    if __package__:
        from export.device import check

        return check
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "check.py")
    spec = importlib.util.spec_from_file_location("softedge_device_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tensors(model_path: str, inputs: np.ndarray, kernels: str) -> dict[str, np.ndarray]:
    """{str(tensor index): value} after one batched invoke of `inputs` with `kernels`."""
    check = _check_module()
    interpreter = check.load_interpreter(model_path, kernels, preserve_all_tensors=kernels != "xnnpack")
    check.invoke(interpreter, inputs)
    if kernels == "xnnpack":
        indices = [detail["index"] for detail in interpreter.get_output_details()]
    else:
        indices = [tensor["index"] for tensor in interpreter.get_tensor_details()]
    values = {}
    for index in indices:
        try:
            values[str(index)] = np.array(interpreter.get_tensor(index))
        except ValueError:  # a tensor with no data (a constant LiteRT folded away, a scratch buffer)
            continue
    return values


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Every tensor LiteRT computes for the models of a directory.")
    parser.add_argument("directory", help="NAME.tflite with NAME.npy inputs; NAME.KERNELS.npz is written beside")
    parser.add_argument("--kernels", default="xnnpack", help="reference, builtin or xnnpack")
    args = parser.parse_args(argv)
    failures = (_check_module().BundleError, OSError, ValueError)   # the runtime's refusals, an unreadable .npy
    for model_path in sorted(glob.glob(os.path.join(args.directory, "*.tflite"))):
        stem = model_path[:-len(".tflite")]
        try:
            values = tensors(model_path, np.load(stem + ".npy"), args.kernels)
        except failures as error:  # the runtime's refusal is a finding: written down, the others still run
            with open(f"{stem}.{args.kernels}.error.txt", "w") as handle:
                handle.write(" ".join(str(error).split()) or type(error).__name__)
            continue
        np.savez(f"{stem}.{args.kernels}.npz", **values)
    return 0


if __name__ == "__main__":
    sys.exit(main())
