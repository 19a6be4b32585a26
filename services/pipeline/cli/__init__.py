"""The `btp` command line: ``main`` is the console script (``btp = services.pipeline.cli:main``)."""

from .main import app, main

__all__ = ["app", "main"]
