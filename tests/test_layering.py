"""Imports point one way (cli -> engine -> providers/store -> types/errors), checked on each
module's `ast`, plus a check that the CLI starts without importing the engine's heavy
dependencies.

Only imports that run are counted: those under `if TYPE_CHECKING:` exist for the type checker
and create no dependency at run time.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

import llm_cascade

from .support import SIM_AWS_KEY, SIM_KEY, run_cli, write_config

PACKAGE = Path(llm_cascade.__file__).parent
ROOT = "llm_cascade"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(body: list[ast.stmt]) -> list[ast.AST]:
    """Every node of `body`, except what sits under `if TYPE_CHECKING:`."""
    found: list[ast.AST] = []
    for stmt in body:
        if isinstance(stmt, ast.If) and _is_type_checking(stmt):
            found.extend(_runtime_nodes(stmt.orelse))
            continue
        found.append(stmt)
        for child in ast.iter_child_nodes(stmt):
            if isinstance(child, ast.stmt):
                found.extend(_runtime_nodes([child]))
            else:
                found.extend(ast.walk(child))
    return found


@cache
def imports_of(name: str) -> frozenset[str]:
    """Absolute names of the modules `name` imports at run time (functions included)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: set[str] = set()
    for node in _runtime_nodes(tree.body):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            # `from . import x` imports the module `x` when there is one.
            found.update(
                f"{target}.{alias.name}"
                for alias in node.names
                if f"{target}.{alias.name}" in MODULES
            )
    return frozenset(found)


def internal(name: str) -> set[str]:
    """The package modules `name` imports, without the package root itself."""
    return {m for m in imports_of(name) if m.startswith(ROOT + ".")}


def third_party(name: str) -> set[str]:
    return {m.split(".")[0] for m in imports_of(name) if not m.startswith(ROOT)}


def short(name: str) -> str:
    return name.removeprefix(ROOT + ".")


def in_area(name: str, area: str) -> bool:
    """True if `name` is the module `area` or inside the package `area` (short names)."""
    return short(name) == area or short(name).startswith(area + ".")


# --- the walker itself -----------------------------------------------------------------------


def test_the_walker_sees_relative_absolute_and_function_level_imports():
    assert "llm_cascade.errors" in imports_of("llm_cascade.types")  # from .errors import
    assert "httpx" in imports_of("llm_cascade.providers._http")  # import httpx
    assert "llm_cascade.providers._http" in imports_of("llm_cascade.cascade")  # inside a function
    assert "keyring" in imports_of("llm_cascade.keyring_choice")  # inside a function
    assert "llm_cascade.cli.render" in imports_of("llm_cascade.cli.run")  # from . import x
    assert "llm_cascade.errors" in imports_of("llm_cascade.providers.base")  # from ..errors


def test_the_walker_skips_type_checking_imports():
    assert "llm_cascade.cascade" not in imports_of("llm_cascade.errors")
    assert "httpx" not in third_party("llm_cascade.cascade")


def test_every_module_is_checked():
    assert {"llm_cascade.types", "llm_cascade.store", "llm_cascade.cli.run"} <= set(MODULES)
    assert len(MODULES) >= 30


# --- the rules -------------------------------------------------------------------------------

LEAVES = {
    "llm_cascade.types": {"llm_cascade.errors", "llm_cascade.untrusted", "llm_cascade.text"},
    "llm_cascade.untrusted": set(),
    "llm_cascade.text": set(),
    "llm_cascade.attempts": {"llm_cascade.clock"},
    "llm_cascade.redaction": set(),
    "llm_cascade.errors": set(),
    "llm_cascade.clock": set(),
    "llm_cascade.paths": set(),
}


@pytest.mark.parametrize("name", sorted(LEAVES))
def test_leaf_modules_import_no_other_package_module(name):
    assert internal(name) <= LEAVES[name], internal(name) - LEAVES[name]


PROVIDER_MODULES = sorted(m for m in MODULES if in_area(m, "providers"))


@pytest.mark.parametrize("name", PROVIDER_MODULES)
def test_providers_import_only_types_errors_and_each_other(name):
    allowed = {"llm_cascade.types", "llm_cascade.errors", "llm_cascade.untrusted"}
    allowed |= {"llm_cascade.redaction", "llm_cascade.text"}  # leaves: text made safe to show
    bad = {m for m in internal(name) if m not in allowed and not in_area(m, "providers")}
    assert not bad, f"{name} imports {sorted(bad)}"


def test_store_knows_nothing_of_the_engine_the_cli_or_providers():
    forbidden = ("cascade", "cli", "providers", "keys", "config")
    bad = {m for m in internal("llm_cascade.store") if any(in_area(m, f) for f in forbidden)}
    assert not bad, bad


def test_only_main_imports_the_cli():
    importers = {
        name
        for name in MODULES
        if not in_area(name, "cli") and any(in_area(m, "cli") for m in internal(name))
    }
    assert importers == {"llm_cascade.__main__"}


@pytest.mark.parametrize("library", ["typer", "rich", "click"])
def test_only_the_cli_imports_terminal_libraries(library):
    users = {name for name in MODULES if library in third_party(name)}
    assert all(in_area(name, "cli") for name in users), users


HTTP_MODULES = {"providers._http", "http_client", "simulator"}


def test_httpx_is_imported_only_at_the_http_edge():
    users = {name for name in MODULES if "httpx" in third_party(name)}
    outside = {n for n in users if not any(in_area(n, area) for area in HTTP_MODULES)}
    assert not outside, outside
    assert "llm_cascade.providers._http" in users


SERVER_STACK = {"llm_cascade.serve", "llm_cascade.cli.serve_cmd", "uvicorn", "httptools", "uvloop"}


def test_the_server_stack_is_imported_only_by_the_gateway():
    users = {name for name in MODULES if {"uvicorn", "httptools", "uvloop"} & third_party(name)}
    assert users == {"llm_cascade.serve.runner"}, users
    importers = {
        name
        for name in MODULES
        if not in_area(name, "serve") and any(in_area(m, "serve") for m in internal(name))
    }
    assert importers == {"llm_cascade.cli.serve_cmd"}, importers


def test_help_does_not_import_the_server_stack():
    done = run_cli("--help", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert done.returncode == 0 and "serve" in done.stdout
    loaded = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "typer" in loaded  # not vacuous
    assert not SERVER_STACK & loaded, sorted(SERVER_STACK & loaded)


def test_the_schema_validator_is_imported_only_where_answers_are_checked():
    users = {name for name in MODULES if "jsonschema_rs" in third_party(name)}
    assert users == {"llm_cascade.structured"}, users


def test_pydantic_is_never_imported_it_is_the_callers_when_used():
    users = {name for name in MODULES if "pydantic" in third_party(name)}
    assert not users, users


def test_keyring_is_imported_only_where_keys_are_read_and_its_backend_chosen():
    users = {name for name in MODULES if "keyring" in third_party(name)}
    assert users == {"llm_cascade.keys", "llm_cascade.keyring_choice"}, users


STATE_CLIENTS = {"redis": "llm_cascade.breakers.redis", "psycopg": "llm_cascade.breakers.postgres"}
# PostgreSQL's one connection code, shared by the breakers and the attempt log ([log]).
PG_CONNECTION = "llm_cascade.breakers.pg"
STATE_STACK = {"redis", "psycopg", PG_CONNECTION, "llm_cascade.fleetlog", *STATE_CLIENTS.values()}


@pytest.mark.parametrize(("library", "module"), STATE_CLIENTS.items())
def test_each_state_client_is_imported_only_by_its_backend(library, module):
    users = {name for name in MODULES if library in third_party(name)}
    assert users == {module} | ({PG_CONNECTION} if library == "psycopg" else set()), users
    importers = {name for name in MODULES if module in internal(name)}
    assert importers == {"llm_cascade.breakers"}, importers


def test_the_postgresql_connection_serves_the_breakers_and_the_attempt_log_only():
    importers = {name for name in MODULES if PG_CONNECTION in internal(name)}
    assert importers == {"llm_cascade.breakers.postgres", "llm_cascade.fleetlog"}, importers


# --- start-up cost ---------------------------------------------------------------------------


def test_importing_the_cli_does_not_import_the_engines_dependencies():
    code = "import json, sys, llm_cascade.cli; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(json.loads(done.stdout))
    assert "llm_cascade.cli" in loaded and "typer" in loaded  # the check is not vacuous
    heavy = {"httpx", "keyring", "asyncio", "llm_cascade.cascade", "jsonschema_rs"}
    assert not heavy & loaded, sorted(heavy & loaded)


def test_a_run_imports_only_what_a_plain_run_uses(tmp_path, sim):
    """The other commands' modules, rich (the spinner is for terminals) and the keyring (off
    in this config) are not imported by `run` in a pipeline."""
    cfg = write_config(tmp_path, sim, {"x": ["a"]}, extra={"keyring": False})
    done = run_cli(
        "run", "-C", "x", "-c", str(cfg), "-p", "hi", env={"PYTHONPROFILEIMPORTTIME": "1"}
    )
    assert done.returncode == 0, done.stderr
    loaded = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert {"llm_cascade.cli.run", "llm_cascade.cascade", "httpx"} <= loaded  # not vacuous
    others = {
        f"llm_cascade.cli.{m}"
        for m in ("state", "failed_cmd", "setup_cmd", "key_cmd", "templates_cmd", "completion")
    }
    unused = others | {"llm_cascade.cli.config_cmd", "rich", "keyring", "tomli_w", "platformdirs"}
    unused |= SERVER_STACK
    unused |= {"llm_cascade.structured", "jsonschema_rs", "pydantic"}  # only runs with a schema
    unused |= STATE_STACK  # only with a shared [state] backend
    assert not unused & loaded, sorted(unused & loaded)


CLI_MODULES = sorted(m for m in MODULES if in_area(m, "cli"))


@pytest.mark.parametrize("name", CLI_MODULES)
def test_the_cli_opens_no_database_or_prompt_folder_itself(name):
    """Workflows live in the library: the CLI calls functions, it builds no store."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    built = {
        node.func.id if isinstance(node.func, ast.Name) else node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute)
    }
    assert not built & {"Store", "FailureStore", "PromptKeeper"}, name


AWS_MODULES = {
    "llm_cascade.providers.bedrock",
    "llm_cascade.providers.sigv4",
    "llm_cascade.providers.eventstream",
    "botocore",
    "boto3",
}


def test_only_bedrock_imports_the_aws_modules():
    for module in ("llm_cascade.providers.sigv4", "llm_cascade.providers.eventstream"):
        importers = {name for name in MODULES if module in internal(name)}
        allowed = {"llm_cascade.providers.bedrock", "llm_cascade.simulator.vendors.bedrock"}
        if module.endswith("eventstream"):  # the framer registry, only for that format
            allowed.add("llm_cascade.providers.streaming")
        assert importers <= allowed, importers - allowed


# Adapters are imported with importlib, which -X importtime does not report: the modules a
# run loaded are read from sys.modules as the CLI exits (it ends with os._exit).
_REPORT_MODULES = """
import json, os, sys
exit_now = os._exit
def report(status):
    sys.__stderr__.write("MODULES " + json.dumps(sorted(sys.modules)) + "\\n")
    sys.__stderr__.flush()
    exit_now(status)
os._exit = report
from llm_cascade.cli import main
sys.argv = ["llm-cascade", *sys.argv[1:]]
main()
"""


def modules_of_a_run(*args: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", _REPORT_MODULES, *args],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "SIM_KEY": SIM_KEY, "SIM_AWS_KEY": SIM_AWS_KEY},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [line] = [ln for ln in done.stderr.splitlines() if ln.startswith("MODULES ")]
    return set(json.loads(line.removeprefix("MODULES ")))


@pytest.mark.parametrize("mode", ["--no-stream", "--stream"])
def test_a_run_without_a_bedrock_entry_imports_nothing_aws_related(tmp_path, sim, mode):
    cfg = write_config(tmp_path, sim, {"x": ["a"]}, extra={"keyring": False})
    loaded = modules_of_a_run("run", "-C", "x", "-c", str(cfg), "-p", "hi", mode)
    assert {"llm_cascade.providers.openai", "llm_cascade.keys"} <= loaded  # not vacuous
    assert not AWS_MODULES & loaded, sorted(AWS_MODULES & loaded)


def test_a_run_with_a_bedrock_entry_imports_the_signer(tmp_path, sim):
    from .providers.helpers import provider_table

    providers = {"br": provider_table(sim, "bedrock")}
    cfg = write_config(
        tmp_path, sim, {"x": [{"provider": "br", "model": "m"}]}, providers=providers,
        extra={"keyring": False},
    )  # fmt: skip
    loaded = modules_of_a_run("run", "-C", "x", "-c", str(cfg), "-p", "hi", "--stream")
    assert {"llm_cascade.providers.bedrock", "llm_cascade.providers.sigv4"} <= loaded
    assert "llm_cascade.providers.eventstream" in loaded
    assert {"botocore", "boto3"}.isdisjoint(loaded)
