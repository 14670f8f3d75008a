"""Errors that the command line reports as one line, without a traceback."""

from __future__ import annotations


class FacegateError(Exception):
    """An error a user can act on; its message says what happened and what to do."""


class StackError(FacegateError):
    """The local stack could not be started, checked or stopped."""
