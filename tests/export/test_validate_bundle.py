import json
import os

import numpy as np
import pytest

from export import validate as validation
from export.device import check as device_check
from export.device import tensors as device_tensors


def test_export_report_has_the_contract_fields(exported_run):
    run_dir, report, _ = exported_run
    saved = json.loads((run_dir / "export" / "report.json").read_text())
    for key in ("smooth", "hard", "tflite"):
        assert 0.0 <= saved["accuracy"][key] <= 1.0
    for key in ("smooth_hard", "hard_tflite"):
        assert 0.0 <= saved["agreement"][key] <= 1.0
    assert set(saved["worst_layer"]) == {"name", "error_steps"}
    assert saved["weights_exact"] is True
    assert saved["unmatched_layers"] == []
    assert {row["name"] for row in saved["layers"]} >= {"image_quant", "relu0_quant", "logits_quant"}
    assert (run_dir / "export" / "drift.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| accuracy |" in (run_dir / "export" / "report.md").read_text()
    # Hard Keras is a float simulation whose agreement with the integers depends on the machine's
    # float kernels (0.9889 on one AVX2 machine, higher on others): only its range is a contract.
    for kernels in ("xnnpack", "builtin"):
        assert 0.0 <= saved["by_kernels"][kernels]["agreement_hard"] <= 1.0
    # The exact link: LiteRT computes the integer reference's integers, every family.
    assert saved["task"] == "classification"
    for family in ("reference", "builtin", "xnnpack"):
        assert saved["reference"][family]["outputs_equal"] is True
        assert saved["reference"][family]["mismatched_elements"] == 0
    assert saved["reference"]["builtin"]["tensors_compared"] >= 5
    assert saved["runtime"]["layer_kernels"] == "xnnpack"
    assert saved["device"]["ok"] is True
    assert "xnnpack" in saved["device"]["matches"] and saved["device"]["families"]["xnnpack"] == 0


def test_check_names_the_worst_layer():
    report = {"agreement": {"hard_tflite": 0.95}, "worst_layer": {"name": "relu2_quant", "error_steps": 4.0},
              "weights_exact": True, "runtime": {"kernels": "xnnpack"},
              "reference": {"xnnpack": {"outputs_equal": True, "mismatched_elements": 0}}}
    failures = validation.check(report, max_drift=1.0, min_agreement=0.999)
    assert len(failures) == 2 and all("relu2_quant" in f for f in failures)
    assert validation.check(report, max_drift=5.0, min_agreement=0.9) == []
    report["reference"]["xnnpack"] = {"outputs_equal": False, "mismatched_elements": 3,
                                      "first_mismatch": {"tensor": "logits", "op": "4 FULLY_CONNECTED"}}
    (failure,) = validation.check(report)
    assert "differs from the integer reference in 3 element(s)" in failure and "FULLY_CONNECTED" in failure


def test_bundle_check_passes_and_detects_tampering(exported_run, tmp_path, monkeypatch):
    run_dir, _, _ = exported_run
    bundle = run_dir / "export" / "bundle"
    assert sorted(p.name for p in bundle.iterdir()) == ["check.py", "eval.npz", "families.py", "manifest.json", "micro", "model.tflite", "tasks.py"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["input_quantization"]["dtype"] == "int8"
    with np.load(bundle / "eval.npz") as archive:
        assert archive["inputs"].dtype == np.int8
    assert device_check.main([str(bundle), "--latency-runs", "5"]) == 0

    import shutil

    tampered = tmp_path / "tampered"
    shutil.copytree(bundle, tampered)
    data = bytearray((tampered / "model.tflite").read_bytes())
    data[-1] ^= 0xFF
    (tampered / "model.tflite").write_bytes(bytes(data))
    assert device_check.main([str(tampered)]) == device_check.EXIT_BAD_BUNDLE

    strict = tmp_path / "strict"
    shutil.copytree(bundle, strict)
    manifest["expected_accuracy"] = 1.5
    (strict / "manifest.json").write_text(json.dumps(manifest))
    # The bar is the accuracy of the family the kernels compute on this ISA, which the bundle
    # carries (LiteRT's builtin kernels on ARM64 are not x86-64's): the exporter's claim is not it ...
    assert device_check.main([str(strict), "--latency-runs", "5"]) == device_check.EXIT_OK
    # ... but a device that misses that family's predictions fails it,
    exact_run = device_check.run
    monkeypatch.setattr(device_check, "run", lambda interpreter, inputs: np.roll(exact_run(interpreter, inputs), 1, axis=-1))
    result = device_check.check_bundle(str(strict), latency_runs=5)
    assert any(failure.startswith(f"accuracy {result['accuracy']:.4f} < expected") for failure in result["failures"])
    monkeypatch.setattr(device_check, "run", exact_run)
    # and where the bundle carries no family of this machine (an ISA never probed), the claim is the bar.
    monkeypatch.setattr(device_check.platform, "machine", lambda: "riscv64")
    result = device_check.check_bundle(str(strict), latency_runs=5)
    assert result["expected_accuracy"] == 1.5 and result["agreement_with"] == "exporter"
    assert [failure for failure in result["failures"] if failure.startswith("accuracy")] == [
        f"accuracy {result['accuracy']:.4f} < expected 1.5000 - {manifest['tolerance']['accuracy']}"]

    os.remove(strict / "eval.npz")
    assert device_check.main([str(strict)]) == device_check.EXIT_BAD_BUNDLE

    # A device that computes other integers than every family is named as such.
    with np.load(bundle / "eval.npz") as archive:
        arrays = {k: archive[k] for k in archive.files}
    assert {"expected_reference", "expected_builtin", "expected_xnnpack"} <= set(arrays)
    outputs = arrays["expected_xnnpack"].copy()
    taken = {int(values[0, 0]) for key, values in arrays.items() if key.startswith("expected_")}
    outputs[0, 0] = next(value for value in range(-128, 128) if value not in taken)   # no family's value
    differing, matches, first = device_check.compare_families(outputs, {k[9:]: v for k, v in arrays.items()
                                                                         if k.startswith("expected_") and k != "expected_outputs"})
    assert matches == [] and min(differing.values()) >= 1
    # The first difference is reported against the family the device is closest to, here xnnpack
    # (one element changed), wherever the other families happen to differ from it on this machine.
    closest = min(differing, key=differing.get)
    assert differing["xnnpack"] == 1 and differing[closest] == 1
    assert first["family"] == closest and first["index"] == [0, 0]
    assert first["device"] == outputs[0, 0] and first["expected"] == arrays[f"expected_{closest}"][0, 0]


def _top_level_imports(path) -> set[str]:
    source = open(path).read()
    return {line.split()[1].split(".")[0] for line in source.splitlines() if line.startswith(("import ", "from "))}


def test_device_check_imports_only_numpy_and_litert():
    from export.device import families
    from models import tasks

    allowed = {"__future__", "argparse", "functools", "glob", "hashlib", "importlib", "json", "os", "platform", "sys",
               "time", "warnings", "numpy"}
    assert _top_level_imports(device_check.__file__) <= allowed
    assert _top_level_imports(device_tensors.__file__) <= allowed   # the probe run on emulated devices
    # the vocabularies a bundle carries beside check.py import nothing
    assert _top_level_imports(families.__file__) == _top_level_imports(tasks.__file__) == {"__future__", "enum"}


@pytest.mark.parametrize("kernels", ["xnnpack", "builtin", "reference"])
def test_every_kernel_path_loads(exported_run, kernels):
    run_dir, _, _ = exported_run
    interpreter = device_check.load_interpreter(run_dir / "export" / "model.tflite", kernels)
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
