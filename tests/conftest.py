import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# TensorFlow calls are slow per example; keep property runs short but varied, and no deadline
# (the first call of a function traces it).
settings.register_profile("softedge", max_examples=30, deadline=None, derandomize=True)
settings.load_profile("softedge")

# Fixtures that train or build a model from the test seed (tests/seeds.py).
SEEDED_FIXTURES = {"trained_run", "exported_run", "float_model"}


def pytest_collection_modifyitems(items):
    """Marks `seeded` every test whose values come from SOFTEDGE_TEST_SEED: its module uses
    `tests.seeds.seeded`, or it uses a fixture that does. `.ci/run` runs them again with
    SOFTEDGE_TEST_SEED=1 (`make test-seeded`)."""
    for item in items:
        module = getattr(item, "module", None)
        if (module is not None and "seeded" in vars(module)) or SEEDED_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.seeded)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A digits run trained for a few epochs (fast), shared by the export and CLI tests."""
    from app.runs import RunConfig, train_run
    from models.training import Recipe
    from tests.seeds import seeded
    from toolkit import QuantScheme

    run_dir = tmp_path_factory.mktemp("runs") / "digits-w4"
    train_run(RunConfig("digits_cnn", "digits", QuantScheme(weight_bits=4), Recipe(float_epochs=3, qat_epochs=2),
                        seed=seeded(0)), run_dir)
    return run_dir


@pytest.fixture(scope="session")
def exported_run(trained_run):
    from app.runs import ExportOptions, export_run

    report, failures = export_run(trained_run, ExportOptions(min_agreement=None))
    return trained_run, report, failures
