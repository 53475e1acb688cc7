"""The generated parts of the documentation, never edited by hand:

- docs/zoo.md, from the model registry (`models.registry`);
- the vocabulary tables, between `<!-- vocabulary:NAME:start -->` and `<!-- vocabulary:NAME:end -->`
  markers in docs/: export targets (`export.targets.Target`), kernel families
  (`export.device.families.KernelFamily`), tasks (`models.tasks.Task`) and rounding methods
  (`toolkit.roundings`).

    python -m app.docs            # rewrites them (make docs)
    python -m app.docs --check    # exit 1 naming each file that differs

Building each zoo model once counts its parameters.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from export.device.families import KernelFamily
from export.targets import Target
from models import registry
from models.tasks import Task
from toolkit.roundings import PtqRounding, Rounding

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
ZOO = DOCS / "zoo.md"

_ZOO_INTRO = """# The model zoo

Generated from the registry (`models/registry.py`, one file per architecture in `models/`) by
`make docs`; a test fails when this page and the registry differ.

Every model trains and exports with its built-in or synthetic data:

```bash
softedge train --model ds_cnn --data synthetic --weight-bits 4 --run runs/ds_cnn-w4
softedge export --run runs/ds_cnn-w4
```

`--data synthetic` generates a learnable stand-in of the model's real data set locally (same shape
and task, fixed seed, nothing downloaded; `models/synthetic.py` states how). For the real data
set, write it as an `.npz` with the layout of the last column and pass `--data path.npz`
([data formats](guide/data-formats.md)). A zoo model given data of another shape or class count
of the same rank is rebuilt for it, and says so.
"""


def _shape(shape) -> str:
    return "x".join(str(d) for d in shape)


def zoo_markdown() -> str:
    """docs/zoo.md: the intro, then one table row per registered model."""
    rows = ["| model | reference | input -> output | parameters | task | real data set and the .npz layout softedge expects |",
            "|---|---|---|---|---|---|"]
    for name in registry.names():
        entry = registry.entry(name)
        model = registry.build(name)
        rows.append(f"| `{name}` | {entry.reference} | {_shape(entry.input_shape)} -> {_shape(model.outputs[0].shape[1:])} "
                    f"| {model.count_params():,} | {entry.task} | {entry.real_data} |")
    return _ZOO_INTRO + "\n" + "\n".join(rows) + "\n"


def _table(header: str, rows) -> str:
    columns = header.count("|") - 1
    return "\n".join([header, "|" + "---|" * columns, *rows])


def vocabulary_tables() -> dict[str, str]:
    """{marker name: markdown table} of every vocabulary the docs list."""
    return {
        "targets": _table("| `--target` | what it is |", [f"| `{t.value}` | {t.description} |" for t in Target]),
        "families": _table("| family | runtime (`--kernels`) | where | what it is |",
                           [f"| `{f.value}` | {f.runtime}{f' (`{f.kernels}`)' if f.kernels else ''} | "
                            f"{'/'.join(f.machines[:1]) or 'any machine'} | {f.description} |" for f in KernelFamily]),
        "tasks": _table("| `--task` | metric |", [f"| `{t.value}` | {t.metric} |" for t in Task]),
        "roundings": _table("| rounding | used by | annealed (alpha) |",
                            [f"| `{r.value}` | {'QAT (`--rounding`)' if r.trainable else 'reference only'} | "
                             f"{'yes' if r.uses_alpha else 'no'} |" for r in Rounding]
                            + [f"| `{r.value}` | PTQ (`ptq --rounding`) | no |" for r in PtqRounding]),
    }


def with_tables(text: str, tables: dict[str, str]) -> str:
    """`text` with every vocabulary section replaced by its table."""
    def replace(match):
        return f"{match.group(1)}\n\n{tables[match.group(2)]}\n\n{match.group(3)}"

    pattern = r"(<!-- vocabulary:(\w+):start -->).*?(<!-- vocabulary:\2:end -->)"
    return re.sub(pattern, replace, text, flags=re.S)


def generated() -> dict[Path, str]:
    """{path: the text it should have} for every generated documentation file."""
    tables = vocabulary_tables()
    pages = {ZOO: zoo_markdown()}
    for path in sorted(ROOT.glob("docs/**/*.md")) + [ROOT / "README.md", ROOT / "CONTRIBUTING.md"]:
        if path != ZOO and path.exists() and "<!-- vocabulary:" in path.read_text():
            pages[path] = with_tables(path.read_text(), tables)
    return pages


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Rewrite (or --check) the generated parts of the docs.")
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    stale = [path for path, text in generated().items() if not path.exists() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path.relative_to(ROOT)} differs from what softedge generates: run make docs", file=sys.stderr)
        return 1 if stale else 0
    for path, text in generated().items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
