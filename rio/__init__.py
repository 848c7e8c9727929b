"""rio: virtual actors for Python."""

from rio.core.errors import *  # noqa: F403  (replaced by the explicit public surface)
