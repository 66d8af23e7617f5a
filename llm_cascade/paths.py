"""Where files live: platform default paths, `~` expansion and owner-only creation."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

APP_NAME = "llm-cascade"
CONFIG_ENV = "LLM_CASCADE_CONFIG"


def default_config_path() -> Path:
    """`$LLM_CASCADE_CONFIG`, else the platform config dir (`~/.config/llm-cascade/config.toml`)."""
    override = os.environ.get(CONFIG_ENV, "").strip()
    if override:
        return Path(expand_user(override)).absolute()
    import platformdirs  # only commands that need the default pay for the import

    return platformdirs.user_config_path(APP_NAME) / "config.toml"


def config_path(override: str | Path | None = None) -> Path:
    """The config file a command uses: `-c PATH` if given, else `default_config_path()`."""
    if override is None:
        return default_config_path()
    return Path(override).expanduser().absolute()  # as load_config() reads it


def default_data_dir() -> Path:
    """The platform data dir (`~/.local/share/llm-cascade` on Linux, honouring XDG_DATA_HOME)."""
    import platformdirs

    return platformdirs.user_data_path(APP_NAME)


def expand_user(path: str) -> str:
    """Expand a leading `~/` (or a bare `~`) to the home directory."""
    if path == "~" or path.startswith("~/"):
        return os.path.expanduser(path)
    return path


def resolve(path: str, base_dir: Path) -> Path:
    """Expand `~` and make a config-relative path absolute (relative to the config's folder)."""
    expanded = Path(expand_user(path))
    return expanded if expanded.is_absolute() else (base_dir / expanded).absolute()


def contract_user(path: Path) -> str:
    """Show a path under the home directory as `~/...` (for files we write for humans)."""
    home = Path.home()
    try:
        return "~/" + path.relative_to(home).as_posix()
    except ValueError:
        return str(path)


def ensure_private_dir(path: Path) -> Path:
    """Create `path` and its missing parents with mode 0700; existing ones are left alone."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process may create it first
            directory.mkdir(mode=0o700)
    return path
