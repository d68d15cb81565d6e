"""The error hierarchy of spanbert.

Library code raises these; only the CLI turns them into one line on stderr and an exit code.
"""

from __future__ import annotations


class SpanbertError(Exception):
    """Base class: a problem the user can fix, reported as one line without a traceback."""

    exit_code = 1


class UsageError(SpanbertError):
    """Bad parameters or command-line usage (exit code 2)."""

    exit_code = 2


class DataError(SpanbertError):
    """Bad or unreadable input data, or a failure while processing it (exit code 1)."""

    exit_code = 1


class ArtifactError(DataError):
    """An artifact that is missing, of the wrong kind, of a newer schema, or tampered with."""


class OutputExistsError(SpanbertError):
    """The output directory holds something else; `--force` replaces it."""

    exit_code = 1
