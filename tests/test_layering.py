"""The layering runs one way: toolkit <- models <- export <- app. A module never imports a room
above its own (read off the source, so a lazy import inside a function counts too)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROOMS = ["toolkit", "models", "export", "app"]


def imported_rooms(path: Path) -> set[str]:
    rooms = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        rooms.update(name.split(".")[0] for name in names if name.split(".")[0] in ROOMS)
    return rooms


@pytest.mark.parametrize("room", ROOMS)
def test_a_room_imports_only_the_rooms_below_it(room):
    above = set(ROOMS[ROOMS.index(room) + 1:])
    offenders = {str(path.relative_to(ROOT)): sorted(imported_rooms(path) & above)
                 for path in sorted((ROOT / room).rglob("*.py")) if imported_rooms(path) & above}
    assert offenders == {}


def test_the_layering_check_sees_a_lazy_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from app.cli import main\n    import export.tflite\n")
    assert imported_rooms(module) == {"app", "export"}


def test_no_function_is_longer_than_80_lines():
    """Small functions with names, not closure nests: every function of the four rooms fits on a screen."""
    long = []
    for room in ROOMS:
        for path in sorted((ROOT / room).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert long == []
