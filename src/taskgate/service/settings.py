"""The settings a CLI command runs with: the environment's, else those of the running
``taskgate up`` of this data dir (its embedded Valkey)."""

from __future__ import annotations

import typer

from ..config import Settings, get_settings
from ..exceptions import ConfigurationError
from . import instance


def cli_settings() -> Settings:
    """The settings, or exit 2 with what to fix when no Redis is known."""
    try:
        settings = get_settings()
        if settings.redis_url is None and settings.result_backend is None:
            joined = instance.join(settings)
            if joined is not None:
                typer.echo(f"taskgate: using the embedded Valkey of `taskgate up` (pid {joined.pid}) at "
                           f"{joined.redis_url}", err=True)
                settings = get_settings()
        settings.require_redis_url()
    except (ConfigurationError, ValueError) as exc:
        typer.echo(f"taskgate: {exc}", err=True)
        raise typer.Exit(2) from exc
    return settings
