"""User-facing error type: every bad input ends here with a message that names what is wrong."""

from __future__ import annotations


class GridctlError(Exception):
    """An error caused by user input (config, data, arguments, payloads).

    The CLI prints ``str(err)`` and exits with code 2; no traceback is shown.
    """
