import keras
import numpy as np
import pytest

from tests.seeds import seeded
from tests.toolkit.conftest import small_model
from toolkit import AlphaSchedule, AnnealRounding, QuantScheme, quantize
from toolkit.errors import ConfigError
from toolkit.rounding import HARD_ALPHA
from toolkit.schedules import alpha_variables, set_alpha


def test_scheme_json_round_trip_and_overrides():
    scheme = QuantScheme(weight_bits=3, rounding="sigmoid", overrides={"conv.*": {"weight_bits": 8, "per_channel": False}})
    again = QuantScheme.from_json(scheme.to_json())
    assert again == scheme
    layer = again.for_layer("conv_1")
    assert (layer.weight_bits, layer.per_channel, layer.rounding) == (8, False, "sigmoid")
    assert again.for_layer("logits").weight_bits == 3
    assert again.for_layer("xconv").weight_bits == 3  # full match only


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weight_bits": 9}, "weight_bits=9"),
        ({"activation_bits": 1}, "activation_bits=1"),
        ({"rounding": "hard"}, "'hard'"),
        ({"unsupported": "skip"}, "unsupported"),
        ({"overrides": {"conv": {"bits": 4}}}, "bits"),
        ({"overrides": {"conv": {"weight_bits": 12}}}, "weight_bits=12"),
        ({"overrides": {"(": {"weight_bits": 4}}}, "pattern"),
    ],
)
def test_scheme_rejects_invalid_values_by_name(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        QuantScheme(**kwargs)


@pytest.mark.parametrize("kind", ["linear", "exponential", "cosine"])
def test_schedules_run_from_start_to_end_monotonically_and_hold(kind):
    schedule = AlphaSchedule(kind, 1.0, 500.0, steps=100, hold_steps=20)
    values = [schedule(step) for step in range(120)]
    assert values[0] == pytest.approx(1.0)
    assert values[80] == pytest.approx(500.0)
    assert all(v == pytest.approx(500.0) for v in values[80:])
    assert np.all(np.diff(values) >= -1e-9)
    assert AlphaSchedule.from_dict(schedule.to_dict()) == schedule
    if kind == "exponential":
        assert schedule(40) == pytest.approx(np.sqrt(500.0))  # geometric midpoint


def test_constant_schedule_and_invalid_schedules():
    assert AlphaSchedule("constant", 3.0, 9.0, 10)(7) == 3.0
    with pytest.raises(ConfigError, match="kind"):
        AlphaSchedule("step")
    with pytest.raises(ConfigError, match="alphas > 0"):
        AlphaSchedule("exponential", 0.0, 10.0)
    with pytest.raises(ConfigError, match="hold_steps"):
        AlphaSchedule("linear", 1.0, 2.0, steps=5, hold_steps=6)


def compiled_quantized_conv1d(weight_bits, samples):
    """A small quantized Conv1D model, compiled, with random data for it."""
    keras.utils.set_random_seed(seeded(0))
    q = quantize(small_model("conv1d"), QuantScheme(weight_bits=weight_bits, rounding="soft"))
    x = np.random.default_rng(0).normal(size=(samples, 16, 2)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 4, samples)
    q.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return q, x, y


def test_anneal_callback_sets_every_alpha_per_batch_and_logs_history():
    q, x, y = compiled_quantized_conv1d(4, 64)
    schedule = AlphaSchedule("linear", 1.0, 9.0, steps=8)
    callback = AnnealRounding(schedule)
    history = q.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[callback])
    # 4 batches an epoch: the last batch of epoch 1 is step 3, of epoch 2 step 7.
    assert history.history["alpha"] == pytest.approx([schedule(3), schedule(7)])
    assert len(alpha_variables(q)) == 3
    assert all(float(v.numpy()) == pytest.approx(schedule(7)) for v in alpha_variables(q))


def test_large_final_alpha_makes_the_smooth_model_the_hard_one():
    q, x, y = compiled_quantized_conv1d(3, 256)
    q.fit(x, y, batch_size=32, epochs=3, verbose=0,
          callbacks=[AnnealRounding(AlphaSchedule("exponential", 1.0, 1e4, steps=24, hold_steps=8))])
    smooth = q.predict(x, verbose=0)
    set_alpha(q, HARD_ALPHA)  # hard rounding everywhere
    hard = q.predict(x, verbose=0)
    assert np.mean(np.argmax(smooth, -1) == np.argmax(hard, -1)) >= 0.99
    set_alpha(q, 1.0)  # ... whereas a smooth alpha is a different model
    assert np.max(np.abs(q.predict(x, verbose=0) - hard)) > 10 * np.max(np.abs(smooth - hard))


def test_annealing_follows_the_schedule_step_by_step_with_several_steps_per_call():
    """With steps_per_execution=k Keras runs batch callbacks once per k steps; alpha is set
    inside the compiled step, so the trajectory and the trained weights are those of k = 1."""
    schedule = AlphaSchedule("exponential", 1.0, 100.0, steps=12, hold_steps=2)
    results = []
    for steps_per_execution in (1, 3):
        q, x, y = compiled_quantized_conv1d(4, 96)
        q.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  steps_per_execution=steps_per_execution)
        history = q.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[AnnealRounding(schedule)])
        results.append((history.history["alpha"], [v.numpy() for v in q.trainable_variables],
                        [float(v.numpy()) for v in alpha_variables(q)]))
    (alpha_1, weights_1, final_1), (alpha_3, weights_3, final_3) = results
    assert alpha_1 == pytest.approx([schedule(5), schedule(11)]) and alpha_3 == pytest.approx(alpha_1)
    assert final_1 == final_3 == [pytest.approx(schedule(11), rel=1e-6)] * 3
    for a, b in zip(weights_1, weights_3, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_alpha_tensor_matches_the_python_schedule():
    from toolkit.schedules import alpha_tensor

    for kind in ("constant", "linear", "exponential", "cosine"):
        schedule = AlphaSchedule(kind, 1.0, 1e4, steps=50, hold_steps=10)
        steps = np.arange(-2, 60)
        np.testing.assert_allclose(np.asarray(alpha_tensor(schedule, steps)),
                                   np.array([schedule(int(s)) for s in steps], np.float32), rtol=1e-6)
