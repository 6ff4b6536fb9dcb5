"""Log lines that land in the run's audit log.

Works in both worlds (``agent`` and ``tool`` both import ``log``).
"""

from . import _wit

__all__ = ["write", "trace", "debug", "info", "warn", "error"]

_LEVELS = ("trace", "debug", "info", "warn", "error")


def write(level: str, message: str) -> None:
    """Write one log line at ``level`` (``"trace"`` ... ``"error"``)."""
    if level not in _LEVELS:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(_LEVELS)}")
    wit_log = _wit.need(_wit.log, "the `log` import")
    wit_log.log(wit_log.Level[level.upper()], str(message))


def trace(message: str) -> None:
    """Write one log line at ``trace`` level."""
    write("trace", message)


def debug(message: str) -> None:
    """Write one log line at ``debug`` level."""
    write("debug", message)


def info(message: str) -> None:
    """Write one log line at ``info`` level."""
    write("info", message)


def warn(message: str) -> None:
    """Write one log line at ``warn`` level."""
    write("warn", message)


def error(message: str) -> None:
    """Write one log line at ``error`` level."""
    write("error", message)
