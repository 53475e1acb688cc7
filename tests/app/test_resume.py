"""Checkpoints: a run interrupted in either phase resumes to the uninterrupted run's result."""

import dataclasses
import json

import keras
import numpy as np
import pytest

from app.checkpoints import RunCheckpoints, config_differences
from app.runs import RunConfig, train_run
from export.artifacts import load_keras_model
from models.training import Recipe
from tests.seeds import seeded
from toolkit import QuantScheme
from toolkit.errors import ConfigError

CONFIG = RunConfig("digits_cnn", "digits", QuantScheme(weight_bits=3), Recipe(float_epochs=2, qat_epochs=2), seed=seeded(3))


class Interrupt(keras.callbacks.Callback):
    """Stops the process's training at the end of an epoch, as a kill would (after the checkpoint)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def _state(run):
    return json.loads((run / "checkpoint" / "state.json").read_text())


def test_a_run_interrupted_in_each_phase_resumes_to_the_uninterrupted_result(tmp_path):
    whole = train_run(CONFIG, tmp_path / "whole")
    assert not (tmp_path / "whole" / "checkpoint").exists()   # deleted when the run finishes

    run = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):   # after float epoch 0 (the saver runs after the interruption's callback)
        train_run(CONFIG, run, float_callbacks=[Interrupt(1)])
    state = _state(run)
    assert (state["phase"], state["epochs_done"]) == ("float", 1) and len(state["history"]["float"]["loss"]) == 1
    with pytest.raises(KeyboardInterrupt):   # resumed, then interrupted again in QAT
        train_run(CONFIG, run, callbacks=[Interrupt(0)], resume=True)
    state = _state(run)
    assert (state["phase"], state["epochs_done"]) == ("qat", 0) and (run / "float.keras").is_file()
    with pytest.raises(KeyboardInterrupt):
        train_run(CONFIG, run, callbacks=[Interrupt(1)], resume=True)
    assert (_state(run)["phase"], _state(run)["epochs_done"]) == ("qat", 1)
    assert sorted(p.name for p in (run / "checkpoint").iterdir()) == ["qat-0001.npz", "state.json"]   # older ones gone
    resumed = train_run(CONFIG, run, resume=True)

    assert resumed["resumed_from"] == {"phase": "qat", "epochs_done": 1}
    for key in ("float_accuracy", "smooth_accuracy", "final_alpha"):
        assert resumed[key] == whole[key]
    assert json.loads((run / "history.json").read_text()) == json.loads((tmp_path / "whole" / "history.json").read_text())
    for name in ("float", "smooth"):
        expected, actual = load_keras_model(tmp_path / "whole" / f"{name}.keras"), load_keras_model(run / f"{name}.keras")
        for a, b in zip(expected.weights, actual.weights, strict=True):
            np.testing.assert_array_equal(b.numpy(), a.numpy(), err_msg=f"{name}: {a.path}")
    with pytest.raises(ConfigError, match="no checkpoint.*finished"):
        train_run(CONFIG, run, resume=True)


def test_resuming_with_other_settings_is_refused_naming_them(tmp_path):
    saved = CONFIG.to_dict()
    RunCheckpoints(tmp_path / "checkpoint", saved).save("qat", 0, {"float": {}, "qat": {}})
    changed = RunConfig("digits_cnn", "digits", QuantScheme(weight_bits=4), Recipe(float_epochs=2, qat_epochs=5), seed=seeded(3))
    with pytest.raises(ConfigError, match=r"recipe\.qat_epochs: 2 -> 5.*scheme\.weight_bits: 3 -> 4"):
        RunCheckpoints(tmp_path / "checkpoint", changed.to_dict()).load()
    assert RunCheckpoints(tmp_path / "checkpoint", saved).load()["phase"] == "qat"
    assert config_differences({"a": {"b": 1}, "c": 2}, {"a": {"b": 1}, "c": 2}) == []


def test_a_checkpoint_naming_a_missing_file_is_an_artifact_error(tmp_path):
    from toolkit.errors import ArtifactError

    checkpoints = RunCheckpoints(tmp_path / "checkpoint", CONFIG.to_dict())
    checkpoints.save("qat", 0, {})
    state = _state(tmp_path)
    state["variables"] = "qat-0001.npz"
    (tmp_path / "checkpoint" / "state.json").write_text(json.dumps(state))
    with pytest.raises(ArtifactError, match="qat-0001.npz"):
        RunCheckpoints(tmp_path / "checkpoint", CONFIG.to_dict()).load()


def test_a_run_resumed_after_its_switch_to_the_devices_arithmetic_ends_as_the_uninterrupted_one(tmp_path):
    """The last two of three QAT epochs on the device's arithmetic (`DeviceArithmeticFrom`): a run
    whose checkpoint holds QAT epoch 0 (the float simulation) resumes into the switch and ends
    with the uninterrupted run's weights and accuracy."""
    config = RunConfig("digits_cnn", "digits", QuantScheme(weight_bits=3),
                       Recipe(float_epochs=1, qat_epochs=3, device_arithmetic="xnnpack", device_epochs=2), seed=seeded(4))
    whole = train_run(config, tmp_path / "whole")
    run = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):   # the checkpoint after QAT epoch 0 (see the test above)
        train_run(config, run, callbacks=[Interrupt(1)])
    assert (_state(run)["phase"], _state(run)["epochs_done"]) == ("qat", 1)
    resumed = train_run(config, run, resume=True)
    assert resumed["smooth_accuracy"] == whole["smooth_accuracy"]
    expected, actual = load_keras_model(tmp_path / "whole" / "smooth.keras"), load_keras_model(run / "smooth.keras")
    assert {getattr(layer, "device_arithmetic", None) for layer in actual.layers} >= {"xnnpack"}
    for a, b in zip(expected.weights, actual.weights, strict=True):
        np.testing.assert_array_equal(b.numpy(), a.numpy(), err_msg=a.path)


def test_a_run_saved_before_the_device_arithmetic_default_resumes_only_as_it_was(tmp_path):
    """A run whose config.json and checkpoint predate `Recipe.device_arithmetic` trained on the
    float simulation throughout: read back, its recipe says so; resumed with today's defaults (the
    device's arithmetic for the last epoch) it is refused naming the two fields, and with
    `--device-arithmetic none` (`device_arithmetic_named`) it resumes."""
    from toolkit.device_families import device_arithmetic_named

    written = CONFIG.to_dict()
    assert written["recipe"]["device_arithmetic"] == "xnnpack"   # today's default
    legacy = {**written, "recipe": {k: v for k, v in written["recipe"].items() if k not in ("device_arithmetic", "device_epochs")}}
    read_back = RunConfig.from_dict(legacy).recipe
    assert (read_back.device_arithmetic, read_back.device_epochs) == (None, None)
    assert RunConfig.from_dict(written) == CONFIG
    RunCheckpoints(tmp_path / "checkpoint", legacy).save("qat", 0, {"float": {}, "qat": {}})
    with pytest.raises(ConfigError, match=r"recipe\.device_arithmetic: None -> 'xnnpack'.*recipe\.device_epochs: None -> 1"):
        RunCheckpoints(tmp_path / "checkpoint", written).load()
    as_it_was = dataclasses.replace(CONFIG, recipe=dataclasses.replace(CONFIG.recipe, **device_arithmetic_named("none", 1)))
    assert RunCheckpoints(tmp_path / "checkpoint", as_it_was.to_dict()).load()["phase"] == "qat"
