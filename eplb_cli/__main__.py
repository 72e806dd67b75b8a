"""``python -m eplb_cli`` runs the CLI."""

from .entry import run

run()
