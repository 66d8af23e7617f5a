"""First-run files: the config template, the exclusive atomic write, the state directories.

`setup` collects every answer first and calls these only at the end, so an abort at any prompt
leaves nothing behind. Data paths follow the platform dirs, honouring XDG.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import tomli_w

from . import files
from .config import AppConfig
from .paths import contract_user, default_data_dir, ensure_private_dir

TEMPLATE = "config_template.toml"


def state_paths(data_dir: Path | None = None) -> tuple[str, str]:
    """The `[database] path` and `[failure_persistence] dir` a new config gets, `~/`-relative."""
    base = data_dir or default_data_dir()
    return contract_user(base / "db.sqlite"), contract_user(base / "failed_prompts")


def template_path() -> str:
    """Where the commented template is installed (package data, present after `pip install`)."""
    return str(resources.files("llm_cascade").joinpath(TEMPLATE))


def template_text(data_dir: Path | None = None) -> str:
    """The original's commented template, its state paths moved under `data_dir`."""
    text = resources.files("llm_cascade").joinpath(TEMPLATE).read_text(encoding="utf-8")
    db_path, fail_dir = state_paths(data_dir)
    for key, value in (("path", db_path), ("dir", fail_dir)):
        line = tomli_w.dumps({key: value}).strip()  # tomli-w does the quoting and escaping
        # A function replacement, so backslashes in a Windows path are not read as escapes.
        text, count = re.subn(rf'(?m)^{key} = ".*"$', _constant(line), text)
        if count != 1:  # pragma: no cover - guards an edit of the template
            raise RuntimeError(f"{TEMPLATE}: expected one `{key} = ...` line, found {count}")
    return text


def _constant(value: str) -> Callable[[re.Match[str]], str]:
    return lambda _: value


def write_new_file(path: Path, text: str) -> None:
    """Create `path` (mode 0600) holding `text`, atomically, and only if nothing is there.

    Readers see either no file or the whole file, and a file created meanwhile is never
    replaced. Raises FileExistsError or OSError.
    """
    ensure_private_dir(path.parent)
    os.close(files.create_new(path, text.encode("utf-8"), durable=True))


def prepare_state(config: AppConfig) -> list[Path]:
    """Create the failed-prompt folder and the database (folders 0700); return new folders.

    Raises OSError or `store.StoreError`, whose message names the path.
    """
    from .store import Store

    folders = dict.fromkeys([config.database_path.parent, config.failure_dir])
    new = [d for d in folders if not d.exists()]
    ensure_private_dir(config.failure_dir)
    with Store(config.database_path):
        pass
    return [d for d in new if d.parent not in new]  # the top of each new tree
