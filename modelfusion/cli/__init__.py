"""The ``modelfusion`` command line (typer)."""

from modelfusion.cli.app import app, main
