"""The ``rio`` command: ``rio run``, ``rio bench``, ``rio --version``."""

from rio.cli.main import app, main

__all__ = ["app", "main"]
