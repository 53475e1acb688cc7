"""softedge export: harden, TFLite conversion, validation, bundles, TFLite Micro; export/device: the
standalone device checks and the integer reference."""

from toolkit import quiet

quiet.install()  # TensorFlow's start-up lines stay off the terminal (toolkit/quiet.py)
