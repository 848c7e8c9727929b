"""Where rio's log goes: loguru's, configured only when asked.

rio logs through `loguru <https://loguru.readthedocs.io>`_ and leaves its handlers
alone, so an application configures logging once for itself and rio. Asked (``rio run
--log-level``, or ``RIO_LOG_LEVEL`` in the environment), :func:`configure_logging`
sends the log to stderr at that level, with no variable values in tracebacks, in the
process and in its worker processes.
"""

from __future__ import annotations

import os
import sys

from loguru import logger

from rio.core.errors import ConfigError

__all__ = ["LOG_LEVEL_ENV", "configure_logging"]

#: The environment variable naming the log level (worker processes read it too).
LOG_LEVEL_ENV = "RIO_LOG_LEVEL"


def configure_logging(level: str | None = None) -> None:
    """Log to stderr at ``level`` (else ``$RIO_LOG_LEVEL``; neither: leave loguru as is).

    Tracebacks show no local variable values (loguru's ``diagnose`` is off): they may
    hold secrets. Sets ``RIO_LOG_LEVEL`` so worker processes started later do the same.

    Raises:
        ConfigError: ``level`` is not a loguru level name (TRACE, DEBUG, INFO, ...).
    """
    source = ""
    if not level:
        level = os.environ.get(LOG_LEVEL_ENV)
        source = f"{LOG_LEVEL_ENV}: "  # name where a wrong value came from
    if not level:
        return
    name = level.upper()
    try:
        logger.level(name)
    except ValueError:
        raise ConfigError(
            f"{source}log level {level!r}: expected one of TRACE, DEBUG, INFO, SUCCESS, "
            "WARNING, ERROR, CRITICAL"
        ) from None
    logger.remove()
    logger.add(sys.stderr, level=name, diagnose=False)
    os.environ[LOG_LEVEL_ENV] = name
