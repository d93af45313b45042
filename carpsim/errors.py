"""The exception hierarchy shared by every layer.

Pure codecs raise only `DecodeError` (with a machine-readable reason) on bad bytes; configuration
problems raise `ConfigError` naming the offending field, so the CLI can print one line and exit 2.
"""

from __future__ import annotations


class CarpsimError(Exception):
    """Base class for every error carpsim raises on purpose."""


class DecodeError(CarpsimError, ValueError):
    """Bytes that do not form a valid message; `reason` is the counter name (e.g. ``badsum``)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class ConfigError(CarpsimError, ValueError):
    """A configuration value is invalid; `field` names it for the one-line error."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class EnvironmentProblem(CarpsimError):  # noqa: N818 - a condition to fix, not a bug
    """The host lacks something carpsim needs (privileges, a tool); the text says what to do."""
