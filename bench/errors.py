"""Errors a user can act on.

Every error mribench raises for bad input names the file or subject at fault and says what
to do about it, so a researcher with a 2,000-scan BIDS tree does not have to bisect it.
"""

from __future__ import annotations


class MribenchError(Exception):
    """Base class: the CLI prints these as one line and exits with status 2."""


class ScanError(MribenchError):
    """A scan file that cannot be used (unreadable, wrong dimensionality, non-finite voxels)."""


class CohortError(MribenchError):
    """A cohort table that is inconsistent (missing files, duplicate rows, missing labels)."""


class SplitError(MribenchError):
    """A split file that leaks subjects, changed on disk, or does not match its cohort."""


class MribenchWarning(UserWarning):
    """Input the harness repaired and went on with (a suite that names an encoder twice): the CLI
    prints it as one line, like a :class:`~bench.data.sanity.ScanWarning`."""


def first_invalid(error) -> str:
    """``'field.path': message`` of a pydantic ``ValidationError``'s first error: where a spec or
    suite file is wrong, in one line, without echoing the (possibly huge) value."""
    first = error.errors()[0]
    where = ".".join(str(x) for x in first["loc"]) or "(top level)"
    return f"'{where}': {first['msg']}"
