"""Errors that map to documented exit codes.

Every user-facing failure is raised as a SwapcliError; the CLI prints its
message on one line and exits with its code, so no traceback reaches a user.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NO_FACE = 3
EXIT_MODEL = 4
EXIT_UNMARKED = 5  # swapcli verify: a file carries no synthetic-media mark
EXIT_CLUSTER = 6  # --cluster: the Ray cluster cannot be reached or used
EXIT_INTERRUPTED = 130


class SwapcliError(Exception):
    exit_code = EXIT_FAILURE


class UsageError(SwapcliError):
    """Bad arguments or an unreadable / unsupported input file."""

    exit_code = EXIT_USAGE


class InputError(UsageError):
    """An input file that cannot be read or decoded."""


class OutputError(UsageError):
    """An output path that cannot be written (exists, is an input, unwritable)."""


class NoFaceError(SwapcliError):
    exit_code = EXIT_NO_FACE


class ModelError(SwapcliError):
    """A model file that is missing, fails verification or cannot be loaded."""

    exit_code = EXIT_MODEL
