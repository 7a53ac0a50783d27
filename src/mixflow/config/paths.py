"""Resolving the paths a config names."""

from __future__ import annotations

from pathlib import Path


def resolve_path(path: str, base_dir: Path) -> str:
    """Paths are relative to the working directory, as in the seed's configs; when that does not
    exist, relative to the config file's directory (both are documented)."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return str(p)
    alt = base_dir / p
    return str(alt) if alt.exists() else str(p)
