"""What every `llmops` subcommand shares: the settings from the click context and the error exit."""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from services.core.settings import Settings


def settings_of(ctx: click.Context) -> Settings:
    """The settings the root command built (environment plus ``--data-dir``)."""
    settings = ctx.ensure_object(dict)["settings"]
    assert isinstance(settings, Settings)
    return settings


def fail(message: str) -> NoReturn:
    """Print ``error: message`` in red on stderr and exit 1."""
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(1)
