"""``python -m eplb_cli`` runs the CLI."""

from .cli import run

run()
