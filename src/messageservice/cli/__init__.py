"""The command line: everything an admin does, scriptable, with --json for machines.

One runner (runner.py) reaches the portal for every command, and one mapping (errors.py, applied in
root.py) turns what can go wrong into one line and an exit code. Importing the package loads Typer,
Rich and the command modules only: each command imports the core, the store or the server when it
runs, so `--help` and input refused before the database is opened stay quick.
"""

from __future__ import annotations

from messageservice.cli.root import cli, main

__all__ = ["cli", "main"]
