"""Files shipped inside the installed packages (defaults that a plain ``pip install`` must find).

Defaults live next to the code that reads them (migrations under ``services/core/clickhouse/migrations``,
prices and budgets under ``streams/cost``, the safety policies under ``streams/safety``, the notifier
example under ``services/notifier``, deployment specs under ``services/inference/specs``) and are
declared as package data in ``pyproject.toml``. They are found with :mod:`importlib.resources`, never
relative to the source tree or the working directory; every one of them can be overridden with an
explicit path.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


class MissingResource(FileNotFoundError):
    """A file that should ship with the package is not installed (a broken install)."""


def package_path(package: str, *parts: str) -> Path:
    """The filesystem path of a file or directory shipped in ``package`` (installed as plain files)."""
    resource = files(package).joinpath(*parts)
    path = Path(str(resource))
    if not path.exists():
        raise MissingResource(f"{'/'.join(parts)} is missing from the installed package {package!r}; reinstall llmops-stream")
    return path
