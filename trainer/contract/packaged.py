"""Files the package ships (sites, search spaces): named by their stem, or given by path."""
from __future__ import annotations

from pathlib import Path

from trainer.contract.typed import ConfigError


def packaged_or_path(name_or_path: str | Path, folder: Path, what: str) -> Path:
    """A file given by path, or by the name of a YAML file packaged in `folder` ("frontier", "small")."""
    path = Path(name_or_path)
    # A directory of that name (the repository's demo/ next to the packaged space "demo") is never the file meant.
    if path.is_file() or path.suffix or "/" in str(name_or_path):
        return path
    packaged = folder / f"{name_or_path}.yaml"
    if not packaged.exists():
        raise ConfigError(f"{name_or_path}: no such file, and not a packaged {what} "
                          f"(packaged: {', '.join(packaged_names(folder))})")
    return packaged


def packaged_names(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml"))
