import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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
    import pytest

    for item in items:
        module = getattr(item, "module", None)
        if (module is not None and "seeded" in vars(module)) or SEEDED_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.seeded)
