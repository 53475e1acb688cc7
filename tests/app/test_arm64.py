"""The emulated ARM64 device (`app.arm64`, `softedge device-check --arm64`): what it is told, what
it refuses, and (make test-slow, once `make arm64` built it) that a bundle's check.py run on
every emulated CPU model matches exactly the ARM64 family of the bundle's kernels."""

import json

import pytest
from click.testing import CliRunner

from app import arm64, cli
from toolkit.errors import ArtifactError

runner = CliRunner()


def test_the_emulated_cpuinfo_names_the_emulated_core_and_its_features():
    text = arm64._cpuinfo("cortex-a53", cores=2)
    assert text.count("processor\t:") == 2 and "CPU part\t: 0xd03" in text and "CPU implementer\t: 0x41" in text
    assert "asimddp" not in text  # Armv8.0: no dot product
    assert "CPU part\t: 0xd0b" in arm64._cpuinfo("cortex-a76") and " asimddp" in arm64._cpuinfo("cortex-a76")
    assert set(arm64.FEATURES) == set(arm64.CPUS)


def test_each_emulated_cpu_reads_a_cpuinfo_of_its_own(tmp_path):
    """Devices emulated at once (two device-checks, or a test beside a benchmark) must not read
    each other's /proc/cpuinfo: each CPU model's file tree links the one sysroot and has its own."""
    root = tmp_path / "device"
    (root / "sysroot" / "usr" / "bin").mkdir(parents=True)
    (root / "sysroot" / "usr" / "bin" / "python3.11").write_text("python")
    a53, a76 = arm64._device_root(root, "cortex-a53"), arm64._device_root(root, "cortex-a76")
    assert "0xd03" in (a53 / "proc" / "cpuinfo").read_text() and "0xd0b" in (a76 / "proc" / "cpuinfo").read_text()
    assert (a53 / "usr" / "bin" / "python3.11").read_text() == "python"
    moved = root.rename(tmp_path / "moved")   # links are relative: the tree may move
    assert (moved / "devices" / "cortex-a76" / "usr" / "bin" / "python3.11").read_text() == "python"


def test_a_device_that_is_not_built_is_refused_with_how_to_build_it(tmp_path):
    with pytest.raises(ArtifactError, match="run make arm64"):
        arm64.run_check(tmp_path / "bundle", "cortex-a53", root=tmp_path / "absent")


def test_a_probe_with_unknown_kernels_or_a_path_for_a_name_is_refused_before_any_device(tmp_path):
    model = (b"", None)
    with pytest.raises(arm64.ConfigError, match="Unknown kernels 'gpu'; expected one of reference, builtin, xnnpack"):
        arm64.run_tensors({"m": model}, "gpu", "cortex-a53", root=tmp_path)
    for name in ("../escape", "a/b", ".hidden", ""):
        with pytest.raises(arm64.ConfigError, match="plain file name"):
            arm64.run_tensors({name: model}, "builtin", "cortex-a53", root=tmp_path)
    with pytest.raises(ArtifactError, match="run make arm64"):
        arm64.run_tensors({"m": model}, "builtin", "cortex-a53", root=tmp_path)


def test_an_unknown_cpu_model_and_a_directory_that_is_no_bundle_are_refused(tmp_path):
    result = runner.invoke(cli.main, ["device-check", str(tmp_path), "--arm64", "--cpu", "cortex-a53,cortex-a99"])
    assert result.exit_code == cli.EXIT_USAGE and "'cortex-a99' is not one of" in result.output
    result = runner.invoke(cli.main, ["device-check", str(tmp_path), "--arm64"])
    assert result.exit_code == cli.EXIT_ARTIFACT and "manifest.json is missing" in result.output


@pytest.mark.parametrize("arm64", [False, True])
def test_a_tampered_bundle_is_refused_before_any_device_runs(exported_run, tmp_path, arm64):
    """A bundle whose file differs from its seal is exit 3 naming the file, on the host and before
    the emulator is asked for (which need not be built)."""
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(exported_run[0] / "export" / "bundle", bundle)
    with (bundle / "eval.npz").open("ab") as handle:
        handle.write(b"relabelled")
    result = runner.invoke(cli.main, ["device-check", str(bundle), *(["--arm64"] if arm64 else [])])
    assert result.exit_code == cli.EXIT_ARTIFACT
    assert "eval.npz has sha256" in result.output and result.output.count("\n") == 1


def test_the_default_cpu_models_are_emulated_models():
    assert set(arm64.DEFAULT_CPUS) <= set(arm64.CPUS) and "max" not in arm64.CPUS


@pytest.mark.slow
def test_a_bundle_matches_its_kernel_family_on_every_emulated_arm64_cpu(exported_run):
    if not arm64.is_built():
        pytest.skip("the ARM64 device is not built here (make arm64)")
    run_dir, _, _ = exported_run
    bundle = run_dir / "export" / "bundle"
    kernels = json.loads((bundle / "manifest.json").read_text())["kernels"]
    result = runner.invoke(cli.main, ["device-check", str(bundle), "--arm64", "--cpu", ",".join(arm64.DEFAULT_CPUS),
                                      "--json"])
    checks = json.loads(result.output)
    assert set(checks) == set(arm64.DEFAULT_CPUS)
    for cpu, check in checks.items():
        family = f"{kernels}-arm64"   # what LiteRT's kernels compute on ARM64
        assert check["machine"] == "aarch64" and check["expected_family"] == family, (cpu, check)
        assert check["families"][family] == 0 and family in check["matches"], (cpu, check)
    assert result.exit_code == cli.EXIT_OK


@pytest.mark.slow
def test_a_builtin_kernels_bundle_names_builtin_arm64_on_an_emulated_arm64_cpu(trained_run, tmp_path):
    """A bundle exported with --kernels builtin: on ARM64 LiteRT's builtin kernels compute other
    integers than on x86-64 (ruy's NEON rounding), and check.py names the family they match."""
    if not arm64.is_built():
        pytest.skip("the ARM64 device is not built here (make arm64)")
    from app.runs import ExportOptions, export_run

    report, failures = export_run(trained_run, ExportOptions(output=tmp_path / "export", kernels="builtin", min_agreement=None))
    assert not failures, failures
    check = arm64.run_check(tmp_path / "export" / "bundle", "cortex-a53")
    assert check["expected_family"] == "builtin-arm64" and "builtin-arm64" in check["matches"], check
    assert check["ok"], check["failures"]


@pytest.mark.slow
def test_a_model_litert_cannot_load_is_reported_and_the_others_still_run():
    if not arm64.is_built():
        pytest.skip("the ARM64 device is not built here (make arm64)")
    import numpy as np

    from tests.export.conftest import common_layers, post_training_int8

    model = common_layers("activations")
    x = np.random.default_rng(0).normal(size=(8, 16)).astype(np.float32)
    good = (post_training_int8(model, x), np.zeros((8, 16), np.int8))
    found = arm64.run_tensors({"corrupt": (b"not a flatbuffer", good[1]), "good": good}, "builtin", "cortex-a53")
    assert "LiteRT cannot load the model" in found["corrupt"]
    assert isinstance(found["good"], dict) and len(found["good"]) > 1


def test_a_build_without_debians_tools_is_refused_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(arm64.shutil, "which", lambda tool: None)
    with pytest.raises(arm64.ConfigError, match="needs Debian's apt-get"):
        arm64.build(tmp_path / ".arm64", say=lambda _: None)
    assert list(tmp_path.iterdir()) == []


def test_a_failing_build_step_is_one_line_naming_the_tool(tmp_path):
    with pytest.raises(ArtifactError, match=r"^dpkg-deb failed \(2\) building the ARM64 device: "):
        arm64._run(["dpkg-deb", "-x", tmp_path / "missing.deb", tmp_path / "out"])
