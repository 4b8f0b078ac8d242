"""The documentation site: it builds in strict mode, the README stays a landing page, and the
tutorial blocks of the quickstart and of "Submit your encoder" run as written.

A tutorial block is a fenced code block right after an HTML comment that names its tutorial::

    <!-- tutorial: quickstart expect="2 of 2 record(s) verified" -->
    ```bash
    bench verify my-results
    ```

``bash`` blocks are run line by line (each line a ``bench`` command, ``\\`` continues a line),
in order, in one temporary folder per tutorial; each must exit 0 and print its block's ``expect``
text. A block marked ``file="NAME"`` is written to that file in the folder instead (the encoder
the submit tutorial uses). The one substitution, which both pages state: ``bench run`` and
``bench submit`` lines get ``--cohort <the tiny cohort> --no-progress``, with ``MRIBENCH_SPLITS``
pointing at its split files, so the tutorials run on the session's tiny cohort in seconds rather
than generating the smoke cohort.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from bench.paths import repo_root

ROOT = repo_root()
README_MAX_LINES = 160
#: the pages whose tutorial blocks the suite runs, by tutorial name
TUTORIALS = {"quickstart": ROOT / "docs" / "quickstart.md", "submit": ROOT / "docs" / "submit.md"}
#: commands that read a cohort: these get the tiny cohort in place of the profile's synthetic one
COHORT_COMMANDS = ("run", "submit")

_MARKED = re.compile(r"<!--\s*tutorial:\s*(?P<name>[\w-]+)(?P<attrs>[^>]*?)-->\s*\n"
                     r"```(?P<lang>\w+)[^\n]*\n(?P<body>.*?)\n```", re.S)
_ATTR = re.compile(r'(\w+)="([^"]*)"')


@dataclass
class TutorialBlock:
    """One marked code block: its tutorial, language, body and attributes (``expect``, ``file``)."""

    tutorial: str
    lang: str
    body: str
    attrs: dict[str, str] = field(default_factory=dict)

    def commands(self) -> list[list[str]]:
        """The block's ``bench`` commands as argument lists (continuation lines joined, comments
        and blank lines dropped)."""
        joined = re.sub(r"\\\n\s*", " ", self.body)
        lines = [line.strip() for line in joined.splitlines()]
        return [shlex.split(line, comments=True) for line in lines if line and not line.startswith("#")]


def tutorial_blocks(page: Path) -> list[TutorialBlock]:
    """The marked blocks of ``page``, in page order."""
    return [TutorialBlock(m["name"], m["lang"], m["body"], dict(_ATTR.findall(m["attrs"])))
            for m in _MARKED.finditer(page.read_text())]


def with_tiny_cohort(args: list[str], cohort: Path) -> list[str]:
    """The substitution the pages state: the tiny cohort, no progress bars, for cohort commands."""
    assert args[0] == "bench", f"a tutorial line must be a bench command: {shlex.join(args)}"
    if args[1] in COHORT_COMMANDS:
        return [*args, "--cohort", str(cohort), "--no-progress"]
    return args


def run_tutorial(name: str, cohort: Path, splits: Path, folder: Path) -> list[str]:
    """Run every block of tutorial ``name`` in ``folder``; the commands run, as run."""
    env = {**os.environ, "MRIBENCH_SPLITS": str(splits), "COLUMNS": "250"}
    blocks = [b for b in tutorial_blocks(TUTORIALS[name]) if b.tutorial == name]
    assert blocks, f"{TUTORIALS[name].name} has no '{name}' tutorial blocks"
    ran = []
    for block in blocks:
        if "file" in block.attrs:
            (folder / block.attrs["file"]).write_text(block.body + "\n")
            continue
        assert block.lang == "bash" and block.attrs.get("expect"), f"a command block needs expect=: {block.body}"
        for args in block.commands():
            command = with_tiny_cohort(args, cohort)
            done = subprocess.run([sys.executable, "-m", "bench.cli", *command[1:]], cwd=folder, env=env,
                                  capture_output=True, text=True, timeout=300)
            printed = done.stdout + done.stderr
            assert done.returncode == 0, f"{shlex.join(command)} exited {done.returncode}:\n{printed}"
            ran.append(shlex.join(args))
        assert block.attrs["expect"] in " ".join(printed.split()), (
            f"{block.body!r} did not print {block.attrs['expect']!r}:\n{printed}")
    return ran


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    """``mkdocs build --strict`` of ``config`` into ``site``."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
                           "--site-dir", str(site)], capture_output=True, text=True, env=env, timeout=300)


def test_the_readme_is_a_landing_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; the limit is {README_MAX_LINES}"


def test_the_site_builds_in_strict_mode(tmp_path):
    built = mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert built.returncode == 0, built.stdout + built.stderr
    for page in ("index.html", "quickstart/index.html", "submit/index.html", "reference/encoders/index.html",
                 "pretraining-v2/index.html", "assets/board-screenshot.png"):
        assert (tmp_path / "site" / page).is_file(), page
    # the API reference pages are rendered from the docstrings, not left as `::: name` lines
    api = (tmp_path / "site" / "reference" / "encoders" / "index.html").read_text()
    assert "EncoderCard" in api and ":::" not in api


def test_every_page_is_in_the_nav():
    """A page left out of the nav is unreachable from the site's menus (strict mode warns only for
    pages that nothing links to); every markdown page under docs/ is listed."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def pages(nav) -> set[str]:
        if isinstance(nav, str):
            return {nav}
        items = nav.values() if isinstance(nav, dict) else nav
        return set().union(*(pages(item) for item in items))

    listed = pages(config["nav"])
    on_disk = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert on_disk <= listed, f"pages missing from mkdocs.yml's nav: {sorted(on_disk - listed)}"


def test_a_broken_link_fails_the_strict_build(tmp_path):
    """The strict build is the check: the project's configuration on a page with a dead link fails."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\nSee [the missing page](missing.md).\n")
    config.update(docs_dir=str(docs), nav=["index.md"])
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    built = mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert built.returncode != 0
    assert "missing.md" in built.stdout + built.stderr


def test_tutorial_blocks_are_found_and_substituted(tmp_path):
    page = tmp_path / "page.md"
    page.write_text('Text.\n\n<!-- tutorial: demo expect="ok" -->\n```bash\nbench run --encoder a \\\n'
                    '    --task t   # why\n```\n\n<!-- tutorial: demo file="e.py" -->\n```python\nX = 1\n```\n\n'
                    '```bash\nbench not-a-tutorial\n```\n')
    first, second = tutorial_blocks(page)
    assert (first.tutorial, first.lang, first.attrs) == ("demo", "bash", {"expect": "ok"})
    assert first.commands() == [["bench", "run", "--encoder", "a", "--task", "t"]]
    assert with_tiny_cohort(first.commands()[0], Path("c")) == [
        "bench", "run", "--encoder", "a", "--task", "t", "--cohort", "c", "--no-progress"]
    assert with_tiny_cohort(["bench", "verify", "r"], Path("c")) == ["bench", "verify", "r"]
    assert second.attrs == {"file": "e.py"} and second.body == "X = 1"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TUTORIALS))
def test_the_tutorial_runs_as_written(name, tiny_cohort_dir, tiny_splits_root, tmp_path):
    """The quickstart's tour and the submit tutorial, on the tiny cohort (the substitution above)."""
    ran = run_tutorial(name, tiny_cohort_dir, tiny_splits_root, tmp_path)
    assert ran and all(line.startswith("bench ") for line in ran)
