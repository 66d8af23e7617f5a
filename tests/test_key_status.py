"""Key status, storage and failing keyrings, as `key list`, `key set` and `config check` see."""

from __future__ import annotations

import keyring
import pytest
from keyring.backends import fail, null

from llm_cascade.config import parse_config
from llm_cascade.keys import (
    KeyringUnavailable,
    clean_secret,
    key_statuses,
    keyring_backend,
    keyring_get,
    keyring_timeout_s,
    lookup_for,
    mask_key,
    resolve_key,
    store_key,
)

from . import keyring_backends
from .support import MemoryKeyring

PROVIDERS = {
    "openai": {"type": "openai"},  # no api_key_service: username = provider name
    "work": {"type": "openai", "api_key_service": "openai-work", "api_key_env": "WORK_KEY"},
    "proxy": {"type": "openai", "base_url": "http://127.0.0.1:9/v1"},  # third party, no env
    "ollama": {"type": "ollama"},
}


def lookups():
    config = parse_config({"providers": PROVIDERS})
    return [lookup_for(config.providers[name]) for name in sorted(config.providers)]


@pytest.mark.parametrize(
    ("key", "masked"),
    [
        ("", ""),
        ("abc", "***"),
        ("abcdefg", "*******"),  # a quarter is 1 character: show nothing
        ("abcdefgh", "a...h"),
        ("sk-abcdefghij", "sk...j"),
        ("sk-abcdef1234567890", "sk...90"),
        ("ключ-ключ-ключ-ключ", "кл...юч"),  # characters, not bytes
    ],
)
def test_mask_shows_at_most_four_characters_and_at_most_a_quarter(key, masked):
    assert mask_key(key) == masked
    shown = len(masked.replace("*", "").replace("...", ""))
    assert shown <= min(4, len(key) // 4)


def test_secrets_are_stripped_and_junk_is_refused():
    assert clean_secret("  sk-abc\n") == "sk-abc"
    for bad, why in [("", "empty"), (" \n\t", "empty"), ("sk-a\nsk-b", "several lines")]:
        with pytest.raises(ValueError, match=why):
            clean_secret(bad)
    with pytest.raises(ValueError, match="control"):
        clean_secret("sk-\x1b[0m")


def test_statuses_use_the_runtime_lookup(isolated_env, monkeypatch):
    isolated_env.set_password("llm-cascade", "openai", "sk-from-keyring")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    monkeypatch.setenv("WORK_KEY", "  ")  # blank counts as missing
    statuses, warning = key_statuses(lookups())
    assert warning is None
    by_name = {s.lookup.provider: s for s in statuses}
    assert by_name["openai"].lookup.keyring_user == "openai"
    assert (by_name["openai"].keyring, by_name["openai"].env_set) == ("set", True)
    assert by_name["openai"].where == "keyring"
    assert by_name["work"].lookup.keyring_user == "openai-work"
    assert (by_name["work"].keyring, by_name["work"].env_set, by_name["work"].where) == (
        "not set",
        False,
        "missing",
    )
    # OPENAI_API_KEY is never offered to a third-party base_url.
    assert by_name["proxy"].env_set is None and by_name["proxy"].where == "missing"
    assert by_name["ollama"].where == "not needed"
    # ... and `run` resolves exactly the same way.
    for status in statuses:
        assert resolve_key(status.lookup).source == status.source


def test_keyring_off_means_env_only(isolated_env, monkeypatch):
    isolated_env.set_password("llm-cascade", "openai", "sk-from-keyring")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    statuses, _ = key_statuses(lookups(), use_keyring=False)
    openai = next(s for s in statuses if s.lookup.provider == "openai")
    assert (openai.keyring, openai.where) == ("off", "env var OPENAI_API_KEY")


def test_a_locked_keyring_is_asked_once_then_env_vars_answer(monkeypatch):
    keyring.set_keyring(keyring_backends.LockedKeyring())
    keyring_backends.LockedKeyring.calls = 0
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    statuses, warning = key_statuses(lookups())
    assert keyring_backends.LockedKeyring.calls == 1
    assert warning is not None and "KeyringLocked" in warning and "\n" not in warning
    assert [s.keyring for s in statuses if s.lookup.needs_key] == ["error"] * 3
    assert next(s for s in statuses if s.lookup.provider == "openai").source == "env"


def test_a_hanging_keyring_gives_up_within_the_time_limit(monkeypatch):
    monkeypatch.setenv("LLM_CASCADE_KEYRING_TIMEOUT", "0.05")
    keyring.set_keyring(keyring_backends.HangingKeyring())
    try:
        with pytest.raises(KeyringUnavailable, match=r"no answer within 0\.05 s"):
            keyring_get("openai")
        _, warning = key_statuses(lookups())
        assert warning is not None and "no answer" in warning
    finally:
        keyring_backends.RELEASE.set()  # let the abandoned worker threads finish


@pytest.mark.parametrize(("raw", "seconds"), [("", 5.0), ("0.5", 0.5), ("-1", 5.0), ("x", 5.0)])
def test_keyring_time_limit_comes_from_the_environment(monkeypatch, raw, seconds):
    monkeypatch.setenv("LLM_CASCADE_KEYRING_TIMEOUT", raw)
    assert keyring_timeout_s() == seconds


@pytest.mark.parametrize("backend", [null.Keyring(), fail.Keyring()])
def test_backends_that_keep_nothing_are_refused_before_storing(backend):
    keyring.set_keyring(backend)
    assert keyring_backend().problem
    with pytest.raises(KeyringUnavailable):
        store_key(lookups()[1], "sk-abc")


def test_store_key_reads_the_key_back(isolated_env: MemoryKeyring):
    store_key(lookups()[1], "sk-abc")
    assert isolated_env.entries[("llm-cascade", "openai")] == "sk-abc"
    assert keyring_backend().problem is None
