"""Error types the CLI turns into exit codes.

Library code raises these with a message a user can act on; the CLI prints the
message as one line on stderr and exits with the code the class carries.
"""

from __future__ import annotations


class EplbError(Exception):
    """Bad input: a file, flag or combination the user must change (exit code 2)."""

    exit_code = 2


class GateFailed(EplbError):
    """A quality gate (`--max-imbalance`, `--min-balancedness`) was not met (exit code 1)."""

    exit_code = 1
