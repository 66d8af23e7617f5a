"""Shell completion as a shell runs it: the scripts `--show-completion` and
`--install-completion` give, exercised in bash with COMP_WORDS/COMP_CWORD; zsh and fish through
the protocol their scripts speak (neither shell is installed here)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from .support import cli_command, write_config

TEMPLATES = {"summarise": {"prompt": "Summarise: $input"}, "translate": {"prompt": "$input"}}


@pytest.fixture
def env(tmp_path, sim):
    cfg = write_config(
        tmp_path,
        sim,
        {"fast": ["a"], "careful": ["b"]},
        providers={"local": {"type": "ollama", "base_url": sim.base_url("ollama")}},
        extra={"templates": TEMPLATES},
    )
    bin_dir = str(Path(cli_command()[0]).parent)
    return {
        **os.environ,
        "LLM_CASCADE_CONFIG": str(cfg),
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
    }


def bash(script: str, env: dict[str, str], cwd: Path | None = None) -> str:
    done = subprocess.run(
        ["bash", "-c", script],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout


def complete(env: dict[str, str], *words: str) -> list[str]:
    """What bash offers for the last of `words` (the word being typed), with the script
    `--show-completion` printed loaded the way a user's shell loads it."""
    line = " ".join(shlex.quote(w) for w in words)
    script = f"""
        eval "$(llm-cascade --show-completion)"
        complete -p llm-cascade
        COMP_WORDS=(llm-cascade {line})
        COMP_CWORD={len(words)}
        "$(complete -p llm-cascade | sed 's/.*-F \\([^ ]*\\) .*/\\1/')" llm-cascade
        printf '%s\\n' "${{COMPREPLY[@]}}"
    """
    out = bash(script, env).splitlines()
    assert out[0] == "complete -o default -F _llm_cascade_completion llm-cascade"
    return [word for word in out[1:] if word]  # printf prints one empty line for none


pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def test_bash_completes_subcommands_and_options(env):
    assert complete(env, "re") == ["reset"]
    assert {"run", "status", "templates", "failed", "key", "config"} <= set(complete(env, ""))
    assert complete(env, "run", "--ca") == ["--cascade"]
    assert {"--template", "--model", "--var"} <= set(complete(env, "run", "--"))
    assert complete(env, "templates", "") == ["list", "show"]


def test_bash_completes_cascade_template_and_provider_names_from_the_config(env):
    assert complete(env, "run", "-C", "") == ["careful", "fast"]
    assert complete(env, "run", "--cascade", "f") == ["fast"]
    assert complete(env, "run", "-t", "") == ["summarise", "translate"]
    assert complete(env, "templates", "show", "s") == ["summarise"]
    assert complete(env, "key", "get", "") == ["local", "sim"]
    assert complete(env, "run", "-m", "lo") == ["local/"]
    assert "openai/" in complete(env, "run", "-m", "") and "sim/a" in complete(env, "run", "-m", "")
    assert complete(env, "reset", "sim/") == ["sim/a", "sim/b"]
    assert complete(env, "failed", "retry", "-C", "c") == ["careful"]


def test_completion_reads_the_config_given_with_c_and_stays_quiet_without_one(env, tmp_path):
    other = tmp_path / "other.toml"
    other.write_text(
        '[providers.p]\ntype = "ollama"\n'
        '[cascades.solo]\nentries = [{provider = "p", model = "m"}]\n'
    )
    assert complete(env, "run", "-c", str(other), "-C", "") == ["solo"]
    assert complete(env, "run", "-c", str(tmp_path / "missing.toml"), "-C", "") == []
    (tmp_path / "broken.toml").write_text("not = toml [")
    assert complete(env, "run", "-c", str(tmp_path / "broken.toml"), "-C", "") == []


def test_install_completion_writes_a_script_bash_loads(env, tmp_path):
    home = tmp_path / "completion-home"
    home.mkdir()
    env = {**env, "HOME": str(home)}
    out = bash("llm-cascade --install-completion", env)
    assert "bash completion installed in" in out
    assert "source" in (home / ".bashrc").read_text()
    loaded = bash("source ~/.bashrc; complete -p llm-cascade", env)
    assert loaded.strip() == "complete -o default -F _llm_cascade_completion llm-cascade"


@pytest.mark.parametrize(
    ("shell", "marker"),
    [
        ("zsh", "compdef _llm_cascade_completion llm-cascade"),
        ("fish", "complete --command llm-cascade"),
    ],
)
def test_zsh_and_fish_scripts_and_the_protocol_they_speak(env, shell, marker):
    # typer picks the shell it runs under; this switch of typer's lets a test name it
    shown = bash(
        f"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION=1 llm-cascade --show-completion {shell}", env
    )
    assert marker in shown and "_LLM_CASCADE_COMPLETE=complete_" + shell in shown
    ask = {
        **env,
        "_LLM_CASCADE_COMPLETE": f"complete_{shell}",
        "_TYPER_COMPLETE_ARGS": "llm-cascade run -C ",
    }
    if shell == "fish":
        ask["_TYPER_COMPLETE_FISH_ACTION"] = "get-args"
    answer = subprocess.run(
        cli_command(), env=ask, capture_output=True, text=True, timeout=60, check=False
    )
    assert "careful" in answer.stdout and "fast" in answer.stdout, answer.stdout + answer.stderr
