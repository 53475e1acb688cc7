"""TFLite Micro: the micro kernel family against TFLM itself, the C sources, arena and flash,
budgets, --target micro, and the bundle's standalone micro check."""

import hashlib
import json
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from app import cli
from export.device import micro_check
from export.device.reference import Graph
from export.harden import harden
from export.micro import (
    MICRO_RESOLVER,
    UnsupportedOnMicroError,
    budget_failures,
    c_name,
    micro_sources,
    micro_stage,
    model_ops,
    peak_tensors,
    require_micro_ops,
)
from export.tflite import convert
from models import registry
from tests.export.conftest import calibrated
from tests.seeds import seeded
from toolkit import QuantScheme, quantize

pytest.importorskip("tflite_micro", reason="tflite-micro has no wheel for this platform")


def _tflm_outputs(tflite_bytes: bytes, inputs: np.ndarray) -> np.ndarray:
    interpreter = micro_check.load(tflite_bytes, 8 << 20)
    with micro_check.captured_native_output():
        return np.stack([micro_check.invoke(interpreter, row) for row in inputs])


def _int8_inputs(tflite_bytes: bytes, count: int, seed: int = 0) -> np.ndarray:
    shape = Graph(tflite_bytes).tensors[Graph(tflite_bytes).inputs[0]].shape[1:]
    return np.random.default_rng(seed).integers(-128, 128, size=(count, *shape)).astype(np.int8)


def _zoo_micro_model(name: str, bits: int, target: str) -> bytes:
    entry = registry.entry(name)
    keras.utils.set_random_seed(seeded(0))
    model = registry.build(name, entry.input_shape, entry.num_classes)
    x = np.random.default_rng(0).uniform(0, 1, size=(64, *entry.input_shape)).astype(np.float32)
    return convert(harden(quantize(model, QuantScheme(weight_bits=bits), calibration_data=x)), target, batch_size=1)


# ---------------------------------------------------------------- the micro kernel family

@pytest.mark.parametrize("kind, bits, target", [("conv2d", 4, "int4-weights"), ("conv1d", 3, "int8"),
                                                ("conv2d", 8, "int8")])
def test_tflite_micro_computes_the_micro_family_of_small_models(kind, bits, target):
    model, _ = calibrated(kind, bits)
    tflite_bytes = convert(harden(model), target, batch_size=1)
    inputs = _int8_inputs(tflite_bytes, 64)
    graph = Graph(tflite_bytes)
    np.testing.assert_array_equal(_tflm_outputs(tflite_bytes, inputs), graph.run(inputs, "micro")[graph.outputs[0]])


def test_tflite_micro_computes_the_micro_family_of_reduce_max_and_a_keep_dims_mean():
    """GlobalMaxPooling2D (REDUCE_MAX) and GlobalAveragePooling2D(keepdims=True) (MEAN with keep_dims
    over height and width, a kernel of its own on LiteRT's builtin kernels) on TFLite Micro."""
    keras.utils.set_random_seed(seeded(0))
    inputs = keras.Input((9, 7, 4))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(inputs)
    pooled = [keras.layers.GlobalMaxPooling2D()(x),
              keras.layers.Flatten()(keras.layers.GlobalAveragePooling2D(keepdims=True)(x))]
    model = keras.Model(inputs, keras.layers.Dense(5)(keras.layers.Add()(pooled)))
    x = 1.5 * np.random.default_rng(seeded(1)).normal(size=(128, 9, 7, 4)).astype(np.float32)
    quantized = quantize(model, QuantScheme(weight_bits=8), calibration_data=x)
    tflite_bytes = convert(harden(quantized), "int8", batch_size=1)
    graph = Graph(tflite_bytes)
    assert {"REDUCE_MAX", "MEAN"} <= {op.name for op in graph.ops}
    inputs = _int8_inputs(tflite_bytes, 64)
    np.testing.assert_array_equal(_tflm_outputs(tflite_bytes, inputs), graph.run(inputs, "micro")[graph.outputs[0]])


def test_tflite_micro_computes_the_micro_family_of_hard_swish():
    """HARD_SWISH on TFLite Micro, on random grids over all 256 int8 inputs."""
    from tests.export.conftest import post_training_int8
    from tests.helpers import with_tensor_grids

    model = keras.Sequential([keras.Input((256,), batch_size=1), keras.layers.Activation("hard_swish")])
    alone = post_training_int8(model, np.random.default_rng(0).normal(size=(16, 256)).astype(np.float32))
    (op,) = Graph(alone).ops
    rng = np.random.default_rng(seeded(2))
    for _ in range(10):
        scales, zeros = np.exp(rng.uniform(np.log(0.004), np.log(0.3), size=2)), rng.integers(-128, 128, size=2)
        tflite_bytes = with_tensor_grids(alone, {op.inputs[0]: (scales[0], zeros[0]), op.outputs[0]: (scales[1], zeros[1])})
        inputs = np.arange(-128, 128, dtype=np.int8)[None]
        graph = Graph(tflite_bytes)
        np.testing.assert_array_equal(_tflm_outputs(tflite_bytes, inputs), graph.run(inputs, "micro")[graph.outputs[0]])


@pytest.mark.slow  # about a minute; every zoo model is also checked by `make bench-micro`
@pytest.mark.parametrize("name, bits, target", [("fc_autoencoder", 4, "int4-weights"), ("resnet8", 8, "int8"),
                                                ("ds_cnn", 4, "int4-weights")])
def test_tflite_micro_computes_the_micro_family_of_zoo_models(name, bits, target):
    tflite_bytes = _zoo_micro_model(name, bits, target)
    inputs = _int8_inputs(tflite_bytes, 24)
    graph = Graph(tflite_bytes)
    micro = _tflm_outputs(tflite_bytes, inputs)
    np.testing.assert_array_equal(micro, graph.run(inputs, "micro")[graph.outputs[0]])
    if name == "fc_autoencoder":
        # TFLite Micro's FULLY_CONNECTED requantizes in fixed point where LiteRT's reference kernel
        # rounds a float64 product: on this per-tensor FC stack they differ in thousands of the
        # 15,360 outputs (3,371 of 40,960 in a probe), far from any machine's last-bit noise.
        assert np.sum(micro != graph.run(inputs, "reference")[graph.outputs[0]]) > 100


def test_the_batch_one_model_has_static_shapes_and_the_same_integers(trained_run):
    smooth = keras.models.load_model(trained_run / "smooth.keras")
    hard = harden(smooth)
    dynamic, static = convert(hard, "int4-weights"), convert(hard, "int4-weights", batch_size=1)
    assert {"SHAPE", "STRIDED_SLICE", "PACK"}.isdisjoint(model_ops(static))
    assert len(static) < len(dynamic)
    inputs = _int8_inputs(static, 16)
    a, b = Graph(dynamic), Graph(static)
    for family in ("reference", "micro"):
        np.testing.assert_array_equal(a.run(inputs, family)[a.outputs[0]], b.run(inputs, family)[b.outputs[0]])


# ---------------------------------------------------------------- sources, ops, peak

def test_c_name():
    assert c_name("digits_cnn") == "digits_cnn"
    assert c_name("1-model.v2") == "m_1_model_v2"
    assert c_name("---") == "model"


def test_micro_sources_hold_the_model_bytes_and_exactly_its_ops(tmp_path):
    tflite_bytes = _zoo_micro_model("resnet8", 4, "int4-weights")
    files = micro_sources(tflite_bytes, "resnet8", 56425)
    assert micro_check.c_array_bytes(files["model_data.cc"]) == tflite_bytes
    assert "alignas(16) const unsigned char g_resnet8_model_data[]" in files["model_data.cc"]
    assert f"g_resnet8_model_data_len = {len(tflite_bytes)};" in files["model_data.cc"]
    assert "kResnet8TensorArenaSize = 56432;" in files["model_data.h"]
    ops = model_ops(tflite_bytes)
    assert ops == ["CONV_2D", "ADD", "AVERAGE_POOL_2D", "FULLY_CONNECTED", "SOFTMAX"]
    adds = [line.split("resolver.")[1].split("(")[0] for line in files["micro_ops.h"].splitlines() if "resolver.Add" in line]
    assert adds == [MICRO_RESOLVER[op] for op in ops]
    assert f"kResnet8OpCount = {len(ops)};" in files["micro_ops.h"]
    compiler = shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no C++ compiler to compile model_data.cc")
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "main.cc").write_text(textwrap.dedent("""\
        #include <cstdint>
        #include <cstdio>
        #include "model_data.h"
        int main() {
          unsigned sum = 0;
          for (unsigned i = 0; i < g_resnet8_model_data_len; ++i) sum = sum * 31u + g_resnet8_model_data[i];
          std::printf("%u %u %u\\n", g_resnet8_model_data_len, sum,
                      (unsigned)(reinterpret_cast<std::uintptr_t>(g_resnet8_model_data) % 16));
          return 0;
        }
        """))
    binary = tmp_path / "main"
    subprocess.run([compiler, "-std=c++17", "-o", str(binary), str(tmp_path / "main.cc"), str(tmp_path / "model_data.cc")],
                   check=True, capture_output=True)
    length, checksum, misalignment = (int(v) for v in subprocess.run([str(binary)], capture_output=True, text=True,
                                                                        check=True).stdout.split())
    expected = 0
    for byte in tflite_bytes:
        expected = (expected * 31 + byte) % (1 << 32)
    assert (length, checksum, misalignment) == (len(tflite_bytes), expected, 0)


def _gelu_model() -> keras.Model:
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Dense(16, activation="gelu", name="hidden")(keras.layers.Flatten(name="flat")(inputs))
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(hidden), name="gelu_net")


def test_an_op_tflite_micro_lacks_is_named_with_its_layer():
    x = np.random.default_rng(0).normal(size=(32, 8, 8, 1)).astype(np.float32)
    model = quantize(_gelu_model(), QuantScheme(weight_bits=4, unsupported="float"), calibration_data=x)
    tflite_bytes = convert(harden(model), "int8", batch_size=1)
    with pytest.raises(UnsupportedOnMicroError, match=r"no kernel for op GELU .*hidden"):
        require_micro_ops(tflite_bytes)
    section, bundle_part = micro_stage(tflite_bytes, "gelu_net", np.zeros((8, 8, 1), np.int8))
    assert section["runs"] is False and bundle_part is None
    assert [row["op"] for row in section["missing_ops"]] == ["GELU"]


def test_peak_names_the_layer_with_the_largest_live_tensors():
    inputs = keras.Input((16, 16, 1))
    wide = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="wide")(inputs)
    narrow = keras.layers.Conv2D(4, 3, strides=4, name="narrow")(wide)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(keras.layers.Flatten()(narrow)))
    x = np.random.default_rng(0).normal(size=(32, 16, 16, 1)).astype(np.float32)
    tflite_bytes = convert(harden(quantize(model, QuantScheme(), calibration_data=x)), "int8", batch_size=1)
    peak = peak_tensors(tflite_bytes)
    # At the first conv, its 16x16x1 input and 16x16x32 output are alive; at the second, that
    # output and a 4x4x4 one: the first holds the most bytes.
    assert "wide" in peak["layer"] and peak["op"] == "CONV_2D"
    assert peak["output_bytes"] == 16 * 16 * 32 and peak["input_bytes"] == 16 * 16


def test_budget_messages_say_which_budget_by_how_much_and_where():
    micro = {"arena_bytes": 5480, "flash_bytes": 6968,
             "peak": {"layer": "relu2", "index": 2, "op": "CONV_2D", "input_bytes": 1024, "output_bytes": 2048,
                      "live_bytes": 3072}}
    arena, flash = budget_failures(micro, max_arena_kb=4, max_flash_kb=6)
    assert "arena 5.4 KB exceeds --max-arena-kb 4 by 1.4 KB" in arena and "'relu2'" in arena and "2048" in arena
    assert "6.8 KB of flash exceeds --max-flash-kb 6 by 0.8 KB" in flash
    assert budget_failures(micro, max_arena_kb=5.36, max_flash_kb=6.81) == []   # 5488.6 and 6973.4 bytes
    assert "not measured" in budget_failures({"skipped": "no wheel"}, 1, None)[0]


def test_without_tflite_micro_the_stage_says_it_skipped(monkeypatch):
    def unavailable():
        raise micro_check.MicroUnavailable("tflite-micro is not installed here")

    monkeypatch.setattr(micro_check, "micro_runtime", unavailable)
    model, _ = calibrated("conv2d", 8)
    tflite_bytes = convert(harden(model), "int8", batch_size=1)
    section, bundle_part = micro_stage(tflite_bytes, "small", _int8_inputs(tflite_bytes, 1)[0])
    assert section["runs"] is None and "not installed" in section["skipped"]
    assert "not measured" in bundle_part["files"]["model_data.h"]   # the sources are still written


# ---------------------------------------------------------------- export, report, bundle, CLI

def test_export_writes_the_micro_section_and_bundle(exported_run):
    run_dir, report, _ = exported_run
    micro = json.loads((run_dir / "export" / "report.json").read_text())["micro"]
    bundle = run_dir / "export" / "bundle"
    model = (bundle / "micro" / "model.tflite").read_bytes()
    assert micro["runs"] is True and micro["ok"] is True
    assert micro["ops"] == ["CONV_2D", "DEPTHWISE_CONV_2D", "MEAN", "FULLY_CONNECTED"]
    assert micro["outputs_equal"] is True and micro["mismatched_elements"] == 0
    assert micro["samples"] == report["samples"] and 0.0 <= micro["accuracy"] <= 1.0
    assert micro["flash_bytes"] == len(model)
    # What stays allocated cannot exceed the smallest arena that worked (beyond its alignment).
    assert 0 < micro["arena_recorded_bytes"] <= micro["arena_bytes"] + 16
    assert sorted(p.name for p in (bundle / "micro").iterdir()) == ["check.py", "micro_ops.h", "model.tflite",
                                                                     "model_data.cc", "model_data.h"]
    assert "## TFLite Micro" in (run_dir / "export" / "report.md").read_text()


_ONLY_NUMPY_AND_TFLM = textwrap.dedent("""\
    import runpy, sys
    BLOCKED = {"tensorflow", "keras", "ai_edge_litert", "tflite_runtime", "tf_keras", "export", "models", "toolkit"
               } | set(sys.argv[1].split(",")) - {""}
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is not installed in this environment")
    sys.meta_path.insert(0, Block())
    script = sys.argv[2]
    sys.argv = sys.argv[2:]
    runpy.run_path(script, run_name="__main__")
    """)


def _run_micro_check(bundle, *extra, block=""):
    return subprocess.run([sys.executable, "-c", _ONLY_NUMPY_AND_TFLM, block, str(bundle / "micro" / "check.py"),
                           str(bundle), *extra], capture_output=True, text=True, timeout=600)


def _reseal(bundle) -> None:
    """Records the current sha256 of every file in the manifest, as the exporter would."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"] = {name: hashlib.sha256((bundle / name).read_bytes()).hexdigest() for name in manifest["files"]}
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def test_the_micro_check_runs_with_only_numpy_and_tflite_micro_and_catches_tampering(exported_run, tmp_path):
    run_dir, _, _ = exported_run
    bundle = run_dir / "export" / "bundle"
    result = _run_micro_check(bundle, "--json")
    assert result.returncode == micro_check.EXIT_OK, result.stderr[-2000:]
    checked = json.loads(result.stdout)
    assert checked["outputs_equal"] is True and checked["runs"] is True

    result = _run_micro_check(bundle, block="tflite_micro")
    assert result.returncode == micro_check.EXIT_NO_RUNTIME and "pip install tflite-micro" in result.stderr

    tampered = tmp_path / "tampered"
    shutil.copytree(bundle, tampered)
    source = (tampered / "micro" / "model_data.cc").read_text()
    first = source.index("0x")
    (tampered / "micro" / "model_data.cc").write_text(source[:first] + "0xff" + source[first + 4:])
    result = _run_micro_check(tampered)   # the seal: the file's sha256 is not the manifest's
    assert result.returncode == micro_check.EXIT_BAD_BUNDLE and "model_data.cc has sha256" in result.stderr
    manifest = json.loads((tampered / "manifest.json").read_text())   # resealed: the bytes are still checked
    manifest["files"]["micro/model_data.cc"] = hashlib.sha256((tampered / "micro" / "model_data.cc").read_bytes()).hexdigest()
    (tampered / "manifest.json").write_text(json.dumps(manifest))
    result = _run_micro_check(tampered)
    assert result.returncode == micro_check.EXIT_BAD_BUNDLE and "model_data.cc does not hold" in result.stderr

    wrong = tmp_path / "wrong"
    shutil.copytree(bundle, wrong)
    with np.load(bundle / "eval.npz") as archive:
        arrays = {key: archive[key] for key in archive.files}
    arrays["expected_micro"][0, 0] ^= 1
    np.savez(wrong / "eval.npz", **arrays)
    _reseal(wrong)   # the integers' check itself, past the seal (tests/app covers the seal)
    result = _run_micro_check(wrong, "--json")
    assert result.returncode == micro_check.EXIT_FAILED
    assert json.loads(result.stdout)["mismatched_elements"] == 1

    # LiteRT's kernels round differently: its accuracy is not TFLite Micro's yardstick when the
    # bundle has TFLite Micro's own integers (here LiteRT's outputs are made perfect).
    better = tmp_path / "better"
    shutil.copytree(bundle, better)
    arrays["expected_micro"][0, 0] ^= 1   # undo
    perfect = np.full_like(arrays["expected_outputs"], -128)
    perfect[np.arange(len(perfect)), arrays["labels"]] = 127
    np.savez(better / "eval.npz", **{**arrays, "expected_outputs": perfect})
    _reseal(better)
    result = _run_micro_check(better, "--json")
    assert result.returncode == micro_check.EXIT_OK, result.stdout[-2000:]
    checked = json.loads(result.stdout)
    assert checked["expected_accuracy"] == checked["accuracy"] < 1.0


def test_budget_flags_over_and_under(exported_run, tmp_path):
    run_dir, _, _ = exported_run
    runner = CliRunner()
    over = runner.invoke(cli.main, ["export", "--run", str(run_dir), "--output", str(tmp_path / "over"),
                                    "--max-arena-kb", "1", "--max-flash-kb", "1"])
    assert over.exit_code == cli.EXIT_CHECK_FAILED, over.output
    assert "exceeds --max-arena-kb 1 by" in over.output and "activations peak at layer" in over.output
    assert "exceeds --max-flash-kb 1 by" in over.output
    under = runner.invoke(cli.main, ["export", "--run", str(run_dir), "--output", str(tmp_path / "under"),
                                     "--max-arena-kb", "1024", "--max-flash-kb", "1024", "--target", "micro"])
    assert under.exit_code == cli.EXIT_OK, under.output
    assert "TFLite Micro (4 ops)" in under.output and "-> OK" in under.output


def test_target_micro_exits_4_naming_the_op_tflite_micro_lacks(tmp_path):
    from app.runs import RunConfig, train_run
    from export.artifacts import save_keras_model
    from models.training import Recipe

    save_keras_model(_gelu_model(), tmp_path / "gelu.keras")
    run_dir = tmp_path / "run"
    train_run(RunConfig(str(tmp_path / "gelu.keras"), "digits", QuantScheme(weight_bits=4, unsupported="float"),
                      Recipe(float_epochs=0, qat_epochs=1), seed=seeded(0)), run_dir)
    result = CliRunner().invoke(cli.main, ["export", "--run", str(run_dir), "--target", "micro"])
    assert result.exit_code == cli.EXIT_UNSUPPORTED, result.output
    assert "GELU" in result.output and "hidden" in result.output
    assert not (run_dir / "export").exists()   # refused before anything was written


def test_a_model_with_two_inputs_gets_no_batch_one_form_by_name():
    from toolkit.errors import ConfigError

    a, b = keras.Input((4,), name="a"), keras.Input((4,), name="b")
    model = keras.Model([a, b], keras.layers.Dense(2)(keras.layers.Concatenate()([a, b])), name="two_inputs")
    with pytest.raises(ConfigError, match="'two_inputs' has 2 inputs"):
        convert(model, "float32", batch_size=1)
