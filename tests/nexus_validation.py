"""Validating acquisition files against NeXus definitions with ``nexusformat``'s validator
(the NeXpy project's ``nxvalidate``/``nxcheck``, with the NeXus definitions it ships)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from nexusformat.nexus.validate import logger as nx_logger
from nexusformat.nexus.validate import validate_application, validate_file


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines += [line for line in record.getMessage().splitlines() if line.strip()]


def _report(run: Callable[[], tuple[int, int] | None]) -> tuple[int, str]:
    """The validator's error count and its report."""
    handler = _Lines()
    level = nx_logger.level
    nx_logger.addHandler(handler)
    nx_logger.setLevel(logging.ERROR)
    try:
        counts = run()
    finally:
        nx_logger.removeHandler(handler)
        nx_logger.setLevel(level)
    assert counts is not None, "\n".join(handler.lines)  # the validator could not run
    return counts[1], "\n".join(handler.lines)


def application_errors(path: Path, application: str | None = None) -> tuple[int, str]:
    """Errors (count, report) of ``/entry`` against its application definition (the file's
    ``definition``, or ``application``)."""
    return _report(lambda: validate_application(str(path), application=application))


def base_class_errors(path: Path) -> tuple[int, str]:
    """Errors (count, report) of every group against its base class."""
    return _report(lambda: validate_file(str(path)))
