"""The results in docs/benchmarks.md are computed from the benchmark JSON; the target verdicts can say "missed"."""

from bench import report


def entry(method, bits, tflite_acc, agreement=1.0, ratio=None):
    return {"model": "mnist1d_cnn", "method": method, "weight_bits": bits, "seeds": 1, "errors": [],
            "tflite_acc": tflite_acc, "tflite_acc_spread": 0.0, "agreement": agreement, "agreement_spread": 0.0,
            "epoch_ratio_vs_tfmot": ratio}


def test_targets_report_met_and_missed_with_the_margin():
    summary = [entry("float", 32, 0.95), entry("tfmot-qat", 3, 0.86),
               entry("softedge-soft", 8, 0.949), entry("softedge-soft", 4, 0.94),
               entry("softedge-soft", 3, 0.93, ratio=1.3), entry("softedge-soft", 2, 0.79, agreement=0.998)]
    lines = "\n".join(report.targets(summary))
    assert "| W8A8 TFLite acc >= float - 0.3 | 94.9 | 94.7 | met |" in lines
    assert "W4A8 TFLite acc >= float - 0.3 | 94.0 | 94.7 | missed by 0.7 points |" in lines
    assert "W3A8 TFLite acc >= tfmot W3A8 + 5 | 93.0 | 91.0 | met |" in lines
    assert "W2A8 TFLite acc >= 80% | 79.0 | 80.0 | missed by 1.0 points |" in lines
    assert "agreement >= 99.9% (worst bit width) | 99.80 | 99.90 | missed by 0.10 points |" in lines
    assert "missed: 1.30x" in lines


def test_failed_rows_show_as_failed():
    failed = {**entry("tfmot-qat", 2, None), "errors": ["RuntimeError: export failed"]}
    table = "\n".join(report.accuracy_table([entry("float", 32, 0.95), failed], "mnist1d_cnn"))
    assert "| tfmot-qat | failed |" in table
