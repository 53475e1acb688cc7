"""The integer reference is a package that runs on its own: copied out of softedge beside
`families.py` (as a device bundle would carry it), with numpy and LiteRT's schema alone, it
computes the same integers; its families are one record each, and no op asks for a family."""

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from export.device.families import KernelFamily
from export.device.reference import FAMILIES, RULES, Graph, rules_of
from tests.export.conftest import common_layers, post_training_int8

PACKAGE = Path(__file__).resolve().parents[2] / "export" / "device" / "reference"

STANDALONE = """
import importlib.abc, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"tensorflow", "keras", "tf_keras", "export", "toolkit", "models", "app"}:
            raise ImportError(f"{name} imported by the standalone reference")

sys.meta_path.insert(0, Refuse())
import numpy as np
import reference

tflite = open(sys.argv[1], "rb").read()
x = np.load(sys.argv[2])
graph = reference.Graph(tflite)
np.savez(sys.argv[3], **{family.value: graph.run(x, family)[graph.outputs[0]] for family in reference.FAMILIES})
"""


def test_the_reference_copied_out_of_softedge_computes_the_same_integers(tmp_path):
    import shutil

    model = common_layers("residual")
    x = 1.5 * np.random.default_rng(1).normal(size=(64, *model.inputs[0].shape[1:])).astype(np.float32)
    tflite = post_training_int8(model, x, "float")
    bundle = tmp_path / "bundle"
    shutil.copytree(PACKAGE, bundle / "reference", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(PACKAGE.parent / "families.py", bundle / "families.py")
    (tmp_path / "m.tflite").write_bytes(tflite)
    np.save(tmp_path / "x.npy", x)
    (bundle / "run.py").write_text(STANDALONE)
    result = subprocess.run([sys.executable, "-E", "-s", str(bundle / "run.py"), str(tmp_path / "m.tflite"),
                             str(tmp_path / "x.npy"), str(tmp_path / "out.npz")], capture_output=True, text=True, cwd=bundle)
    assert result.returncode == 0, result.stderr[-2000:]
    graph = Graph(tflite)
    standalone = np.load(tmp_path / "out.npz")
    for family in FAMILIES:
        assert np.array_equal(standalone[family.value], graph.run(x, family)[graph.outputs[0]]), family


def test_every_kernel_family_has_one_rules_record():
    assert set(RULES) == set(KernelFamily) == set(FAMILIES)
    assert all(rules.family is family for family, rules in RULES.items())
    assert rules_of("xnnpack") is RULES[KernelFamily.XNNPACK]
    with pytest.raises(ValueError, match="Unknown kernel family 'arm'"):
        rules_of("arm")


def _family_comparisons(path: Path) -> list[str]:
    """Source lines that compare something with a family's name or member."""
    names = {family.value for family in KernelFamily} | {family.name for family in KernelFamily}
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                value = side.value if isinstance(side, ast.Constant) else getattr(side, "attr", None)
                if value in names:
                    found.append(f"{path.name}:{node.lineno}")
    return found


def test_no_op_asks_which_family_it_runs():
    ops = [path for path in PACKAGE.glob("*.py") if path.name not in ("rules.py", "__init__.py")]
    assert [line for path in ops for line in _family_comparisons(path)] == []


def test_the_family_check_sees_a_branch(tmp_path):
    module = tmp_path / "op.py"
    module.write_text("def f(context):\n    if context.family == 'xnnpack':\n        return 1\n"
                      "    return KernelFamily.BUILTIN in (context.family,)\n")
    assert _family_comparisons(module) == ["op.py:2", "op.py:4"]
