"""The application room: the `softedge` command line and run management.

It sits above the three libraries (toolkit <- models <- export) and is the only place that knows
about run directories, locks, checkpoints and the console; the libraries never import it.
"""

from toolkit import quiet

quiet.install()  # TensorFlow's start-up lines stay off the terminal (toolkit/quiet.py)
