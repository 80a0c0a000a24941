"""``python -m taskgate`` runs the CLI."""

from __future__ import annotations

from .service.cli import main

main()
