"""softedge models: the zoo (one file per architecture, registry.py), datasets and shards, the data
checks at the boundary, tasks, and the training recipe."""

from toolkit import quiet

quiet.install()  # TensorFlow's start-up lines stay off the terminal (toolkit/quiet.py)
