"""`DriftReport`: one typed record, read like its JSON form, rendered once each as text,
markdown, JSON and PNG."""

import json
import math

import pytest

from export.drift_report import DriftReport
from export.validate import check, non_finite_failures


def _report(**sections) -> DriftReport:
    layer = {"name": "conv_quant", "tflite_tensor": "conv;relu", "scale": 0.05, "max_error_steps": 1.0,
             "mean_error_steps": 0.01, "over_one_step": 0.0, "local_max_error_steps": 1.0}
    return DriftReport(
        task="classification", samples=10, output_error_steps={"max": 1.0, "mean": 0.1, "step": 0.1},
        reference={"xnnpack": {"outputs_equal": True, "mismatched_elements": 0, "tensors_compared": 5}},
        weights_exact=True, weight_mismatches=[], worst_layer={"name": "conv_quant", "error_steps": 1.0},
        first_layer_over_one_step=None, worst_local_layer={"name": "conv_quant", "error_steps": 1.0},
        layers=[layer], unmatched_layers=[],
        runtime={"name": "ai_edge_litert", "kernels": "xnnpack", "layer_kernels": "xnnpack",
                 "layer_source": "integer reference", "machine": "x86_64"},
        tflite_bytes=1000, float_ops=[], layer_samples=10,
        by_kernels={"xnnpack": {"max_error_steps": 1.0, "mean_error_steps": 0.1, "accuracy": 0.9, "agreement_hard": 1.0}},
        accuracy={"hard": 0.9, "tflite": 0.9}, agreement={"hard_tflite": 1.0}, **sections)


def test_the_json_form_has_every_field_and_only_the_sections_present():
    report = _report()
    form = json.loads(report.to_json())
    assert form == json.loads(json.dumps(report.to_dict()))
    assert "micro" not in form and "error" not in form and form["worst_local_layer"]["name"] == "conv_quant"
    assert list(report) == list(form) and len(report) == len(form)
    report.micro = {"runs": False, "ops": [], "error": "no batch-1 model"}
    assert json.loads(report.to_json())["micro"]["error"] == "no batch-1 model"


def test_it_reads_like_its_json_form():
    report = _report()
    assert report["accuracy"]["tflite"] == report.accuracy["tflite"] == 0.9
    assert report.get("device") is None and "device" not in report and "agreement" in report
    with pytest.raises(KeyError):
        report["device"]


def test_the_gates_and_the_non_finite_check_read_the_record():
    report = _report()
    assert check(report, max_drift=1.5, min_agreement=0.99) == []
    report.agreement["hard_tflite"] = math.nan
    assert non_finite_failures(report) == ["agreement.hard_tflite is not a finite number"]
    assert any("agreement" in failure for failure in check(report, min_agreement=0.5))
    assert json.loads(report.to_json())["agreement"]["hard_tflite"] is None


def test_each_rendering_shows_the_measurements():
    report = _report(micro={"runs": False, "ops": [], "error": "too big"})
    text, markdown = report.to_text(), report.to_markdown()
    assert "| accuracy | - | 0.9000 | 0.9000 |" in text and "TFLite Micro: does not run (too big)" in text
    assert "| conv_quant | conv | 0.05 | 1.00 |" in markdown and "# softedge drift report" in markdown
    assert report.to_png().startswith(b"\x89PNG")
