"""Commands that start in seconds (issue 31): no heavy import before an argument is read, and the
cohort table read from a cache that is the very table the reader builds (its hash is in every
record's identity) and is rebuilt when the tree changes. Wall-time ratios are measured by
``benchmarks/startup.py``, not asserted here (they depend on the machine's load)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from bench.data import bids_cache
from bench.data.bids import read_bids, read_bids_table

HEAVY = ("torch", "monai", "numpy", "pandas", "sklearn", "scipy")


def imported_by(args: list[str], env: dict | None = None) -> set[str]:
    """The heavy top-level packages ``bench <args>`` imports, run in a fresh interpreter."""
    code = ("import sys, contextlib, io\nfrom bench.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n        main(sys.argv[1:])\n    except SystemExit:\n        pass\n"
            f"print('loaded:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})})
    return set(filter(None, out.stdout.strip().splitlines()[-1].removeprefix("loaded:").split(",")))


@pytest.mark.parametrize("args", [["--help"], ["list", "profiles"], ["run", "--encoder", "x"]])
def test_help_and_listings_import_no_numerical_library(args):
    assert imported_by(args) == set()


def test_list_tasks_without_a_cohort_imports_neither_torch_nor_monai(tmp_path):
    """(numpy and pandas come with the task specs' module, bench.tasks)"""
    assert not imported_by(["list", "tasks", "--profile", "smoke"], {"MRIBENCH_CACHE": str(tmp_path)}) & {"torch", "monai"}


def test_help_that_names_the_protocols_is_written_when_printed(capsys):
    from bench.cli import main

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "linear_probe (default), fractions" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["data", "import", "--dataset", "nope", "--root", "."])
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_cached_cohort_table_is_the_read_table_and_keeps_the_hash(tiny_cohort_dir):
    from bench.runner import cohort_sha256

    root = tiny_cohort_dir.resolve()
    fresh, skipped = read_bids_table(root)
    read_bids(root)  # stores the table (or finds it stored by an earlier test)
    assert json.loads(bids_cache.cache_file(root).read_text())["root"] == str(root)
    cached, cached_skipped = bids_cache.cached_read(root, lambda: pytest.fail("the tree was read again"),
                                                    code=tuple(bids_cache_code()))
    pd.testing.assert_frame_equal(cached, fresh, check_exact=True)
    assert list(cached.columns) == list(fresh.columns) and cached_skipped == skipped
    with_cache, without = read_bids(root), read_bids(root, cache=False)
    pd.testing.assert_frame_equal(with_cache.table, without.table, check_exact=True)
    assert cohort_sha256(with_cache) == cohort_sha256(without)


def bids_cache_code():
    from bench.data import bids

    return bids._READER_CODE  # the fingerprint the reader uses


def test_cached_table_is_rebuilt_when_a_session_file_changes(tiny_cohort_dir, tmp_path):
    root = tmp_path / "tree"
    shutil.copytree(tiny_cohort_dir, root)
    before = read_bids(root).table
    sessions = sorted(root.glob("sub-*/sub-*_sessions.tsv"))[0]
    table = pd.read_csv(sessions, sep="\t", dtype=str, keep_default_na=False)
    table.loc[0, "age"] = "77.125"  # another age, another size
    table.to_csv(sessions, sep="\t", index=False)
    after = read_bids(root)
    sub = sessions.parent.name
    row = after.table[(after.table["participant_id"] == sub)
                      & (after.table["session_id"] == table.loc[0, "session_id"])]
    assert (row["age"] == 77.125).all() and not before.equals(after.table)
    pd.testing.assert_frame_equal(after.table, read_bids(root, cache=False).table, check_exact=True)


def test_a_stored_table_whose_dtypes_do_not_come_back_is_a_miss():
    data = bids_cache.encode_table(pd.DataFrame({"a": pd.array([1, None], dtype="Int64"), "b": [0.5, float("nan")]}))
    assert bids_cache.decode_table(data).dtypes.astype(str).tolist() == ["Int64", "float64"]
    data["columns"][0]["dtype"] = "int64"  # an int64 column cannot hold the missing cell
    with pytest.raises((ValueError, TypeError)):
        bids_cache.decode_table(data)
