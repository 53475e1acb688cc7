"""The documentation tells the truth: README.md is a short guide; its links resolve; the generated
pages (docs/zoo.md, the vocabulary tables) are what softedge generates; and every bash and python
block of README.md and docs/ runs as written (make test-slow), each page in a scratch directory,
in order, with the epochs shortened through the documented variables."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.quiet import STARTUP_NOISE

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SKIP = re.compile(r"<!-- doc-test: skip: (.+?) -->\s*$")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
# The documented variables that shorten training (README.md, "Commands").
QUICK = {"SOFTEDGE_FLOAT_EPOCHS": "1", "SOFTEDGE_QAT_EPOCHS": "2", "SOFTEDGE_PTQ_ITERATIONS": "20",
         "FLOAT_EPOCHS": "1", "QAT_EPOCHS": "2"}


def code_blocks(text: str) -> list[tuple[str, str, str | None]]:
    """(language, code, why it is skipped or None) of every fenced block, in order."""
    blocks = []
    for match in FENCE.finditer(text):
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skipped = SKIP.search(before)
        blocks.append((match.group(1), match.group(2), skipped.group(1) if skipped else None))
    return blocks


def runnable(page: Path) -> list[tuple[str, str]]:
    return [(language, code) for language, code, skipped in code_blocks(page.read_text())
            if language in ("bash", "python") and skipped is None]


def test_the_block_reader_sees_languages_skips_and_order():
    text = ("intro\n```bash\necho one\n```\n<!-- doc-test: skip: needs two hosts -->\n```bash\necho two\n```\n"
            "```python\nprint(3)\n```\n```cpp\nint x;\n```\n")
    assert code_blocks(text) == [("bash", "echo one\n", None), ("bash", "echo two\n", "needs two hosts"),
                                 ("python", "print(3)\n", None), ("cpp", "int x;\n", None)]


def test_the_readme_is_a_short_guide():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    for heading in ("## Set-up (two commands)", "## Commands", "## Exit codes", "## Read more"):
        assert heading in readme
    assert readme.count("## Quick start") == 3


def test_the_exit_code_table_lists_the_codes_the_cli_exits_with():
    from app import cli

    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Exit codes"):readme.index("## Read more")]
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", table, re.M)}
    assert documented == {value for name, value in vars(cli).items() if name.startswith("EXIT_")}


def test_the_command_table_lists_every_command():
    from app import cli

    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `softedge (\w[\w-]*)` \|", readme, re.M))
    assert documented == set(cli.main.commands)


def test_every_page_a_link_names_exists():
    for page in [*PAGES, ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md"]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to missing {target}"


def test_every_skipped_block_says_why_and_few_are_skipped():
    skipped = [(page.name, why) for page in PAGES for _, _, why in code_blocks(page.read_text()) if why]
    assert skipped == [("README.md", "`make test` is the test suite that runs this page")]


def test_the_generated_pages_are_current():
    from app import docs

    stale = [str(path.relative_to(ROOT)) for path, text in docs.generated().items()
             if not path.exists() or path.read_text() != text]
    assert stale == [], "run make docs"


def _scratch(tmp_path: Path) -> Path:
    """A directory that looks like a checkout to make and the commands: the Makefile, the
    project file and the virtualenv linked in; every run and file the page writes stays here."""
    work = tmp_path / "work"
    work.mkdir()
    for name in ("Makefile", "pyproject.toml", ".venv"):
        (work / name).symlink_to(ROOT / name)
    return work


@pytest.mark.slow
@pytest.mark.parametrize("page", [page for page in PAGES if runnable(page)], ids=lambda page: str(page.relative_to(ROOT)))
def test_every_command_of_the_page_runs_as_written(page, tmp_path):
    work = _scratch(tmp_path)
    env = {**os.environ, **QUICK, "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    for variable in ("MAKEFLAGS", "TF_CPP_MIN_LOG_LEVEL", "SOFTEDGE_TF_STARTUP"):
        env.pop(variable, None)
    for index, (language, code) in enumerate(runnable(page)):
        if language == "python":
            script = work / f"block_{index}.py"
            script.write_text(code)
            command = [sys.executable, str(script)]
        else:
            command = ["bash", "-euo", "pipefail", "-c", code]
        result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=1500)
        assert result.returncode == 0, (f"{page.relative_to(ROOT)} block {index + 1} ({language}) exited "
                                        f"{result.returncode}:\n{code}\n{result.stdout[-1500:]}\n{result.stderr[-3000:]}")
        if language == "python":  # softedge imported first: no TensorFlow start-up lines
            assert [line for line in result.stderr.splitlines() if STARTUP_NOISE.match(line)] == [], result.stderr
