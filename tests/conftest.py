import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from hypothesis import settings  # noqa: E402

# TensorFlow calls are slow per example; keep property runs short but varied, and no deadline
# (the first call of a function traces it).
settings.register_profile("softedge", max_examples=30, deadline=None, derandomize=True)
settings.load_profile("softedge")
