"""API keys: masking, where a key is looked up, blank values, and a
keyring that fails or hangs — with real keyring backends, no mocks."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import keyring
import pytest
from keyring.backend import KeyringBackend
from keyring.errors import KeyringError

from llm_cascade import keys
from llm_cascade.config import ProviderConfig
from llm_cascade.keys import (
    KeyLookup,
    KeyringUnavailable,
    keyring_delete,
    keyring_get,
    keyring_set,
    lookup_for,
    mask_key,
    missing_key_message,
    read_env,
    resolve_key,
)

from .support import MemoryKeyring


class BrokenKeyring(KeyringBackend):
    """A backend whose every call fails, like a locked or unreachable Secret Service."""

    priority = 1  # type: ignore[assignment]

    def get_password(self, service: str, username: str) -> str | None:
        raise KeyringError("the collection is locked")

    def set_password(self, service: str, username: str, password: str) -> None:
        raise KeyringError("the collection is locked")

    def delete_password(self, service: str, username: str) -> None:
        raise KeyringError("the collection is locked")


class BlockingKeyring(KeyringBackend):
    """A backend that waits (for an unlock dialog nobody answers) until released."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()

    def get_password(self, service: str, username: str) -> str | None:
        self.entered.set()
        self.release.wait(30)
        return "too late"

    def set_password(self, service: str, username: str, password: str) -> None:
        self.release.wait(30)

    def delete_password(self, service: str, username: str) -> None:
        self.release.wait(30)


@pytest.fixture
def blocking() -> Iterator[BlockingKeyring]:
    backend = BlockingKeyring()
    keyring.set_keyring(backend)
    yield backend
    backend.release.set()  # let the abandoned worker thread finish


def provider(name: str = "openai", type_: str = "openai", **fields: str) -> ProviderConfig:
    return ProviderConfig(name=name, type=type_, **fields)  # type: ignore[arg-type]


# --- mask_key --------------------------------------------------------------------------------

ALPHABETS = ["abcdefghijklmnopqrstuvwxyz0123456789-_", "éüßñçø", "日本語キー", "🔑🗝️x"]


def revealed(masked: str) -> str:
    return masked.replace("*", "").replace("...", "")


@pytest.mark.parametrize("alphabet", ALPHABETS)
def test_mask_never_reveals_more_than_four_chars_or_a_quarter(alphabet):
    for length in range(0, 130):
        key = "".join(alphabet[(i * 7 + length) % len(alphabet)] for i in range(length))
        masked = mask_key(key)
        shown = revealed(masked)
        assert len(shown) <= 4, (key, masked)
        assert 4 * len(shown) <= length, (key, masked)
        if "..." in masked:
            head, _, tail = masked.partition("...")
            assert key.startswith(head) and key.endswith(tail), (key, masked)
        else:
            assert masked == "*" * length, (key, masked)


@pytest.mark.parametrize(
    ("key", "masked"),
    [
        ("", ""),
        ("short", "*****"),
        ("sk-abcd", "*******"),
        ("sk-abcde", "s...e"),
        ("sk-abcdef123456", "sk...6"),
        ("sk-proj-abcdef123456", "sk...56"),
        ("sk-" + "x" * 60 + "WXYZ", "sk...YZ"),
    ],
)
def test_mask_examples(key, masked):
    assert mask_key(key) == masked


# --- where a key is looked up ----------------------------------------------------------------


def test_vendor_default_env_var_is_used_for_the_vendors_own_url():
    lookup = lookup_for(provider())
    assert lookup == KeyLookup("openai", True, "openai", "OPENAI_API_KEY")


def test_a_trailing_slash_on_the_vendor_url_is_still_the_vendors_url():
    lookup = lookup_for(provider(base_url="https://api.openai.com/v1/"))
    assert lookup.env_var == "OPENAI_API_KEY"


@pytest.mark.parametrize(
    ("type_", "base_url", "withheld"),
    [
        ("openai", "https://api.groq.com/openai/v1", "OPENAI_API_KEY"),
        ("openai", "http://127.0.0.1:8000/v1", "OPENAI_API_KEY"),
        ("anthropic", "https://proxy.example.com", "ANTHROPIC_API_KEY"),
        ("gemini", "https://gemini-proxy.example.com", "GOOGLE_API_KEY"),
    ],
)
def test_vendor_default_env_var_is_withheld_from_a_third_party_url(type_, base_url, withheld):
    lookup = lookup_for(provider("proxy", type_, base_url=base_url))
    assert lookup.env_var is None
    assert lookup.withheld_env_var == withheld
    assert lookup.keyring_user == "proxy"
    message = missing_key_message(lookup)
    assert "llm-cascade key set proxy" in message
    assert f"{withheld} is not sent to a custom base_url" in message


def test_an_explicit_env_var_is_used_with_any_url():
    lookup = lookup_for(
        provider("groq", base_url="https://api.groq.com/openai/v1", api_key_env="GROQ_API_KEY")
    )
    assert (lookup.env_var, lookup.withheld_env_var) == ("GROQ_API_KEY", None)
    assert "set GROQ_API_KEY" in missing_key_message(lookup)


def test_keyring_user_is_api_key_service_else_the_provider_name():
    assert lookup_for(provider("work", api_key_service="openai-work")).keyring_user == (
        "openai-work"
    )
    assert lookup_for(provider("work")).keyring_user == "work"


def test_ollama_needs_no_key_even_with_key_fields():
    lookup = lookup_for(provider("local", "ollama", api_key_service="x", api_key_env="X"))
    assert not lookup.needs_key
    assert resolve_key(lookup).source == "not_needed"


# --- env vars --------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [("  sk-1 \n", "sk-1"), ("", None), ("  \t", None)])
def test_read_env_strips_and_treats_blank_as_missing(monkeypatch, value, expected):
    monkeypatch.setenv("SOME_KEY", value)
    assert read_env("SOME_KEY") == expected


def test_read_env_of_an_unset_or_unnamed_variable_is_none(monkeypatch):
    monkeypatch.delenv("SOME_KEY", raising=False)
    assert read_env("SOME_KEY") is None
    assert read_env(None) is None


# --- resolution order ------------------------------------------------------------------------


def test_the_keyring_wins_over_the_env_var(isolated_env, monkeypatch):
    isolated_env.set_password("llm-cascade", "openai", "sk-from-keyring")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    resolved = resolve_key(lookup_for(provider()))
    assert (resolved.source, resolved.value) == ("keyring", "sk-from-keyring")
    assert resolved.warning is None


def test_the_env_var_is_used_when_the_keyring_has_no_entry(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", " sk-from-env ")
    resolved = resolve_key(lookup_for(provider()))
    assert (resolved.source, resolved.value, resolved.env_var) == (
        "env",
        "sk-from-env",
        "OPENAI_API_KEY",
    )


def test_a_blank_keyring_entry_falls_through_to_the_env_var(isolated_env, monkeypatch):
    isolated_env.set_password("llm-cascade", "openai", "   ")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    assert resolve_key(lookup_for(provider())).source == "env"


def test_keyring_can_be_switched_off(isolated_env, monkeypatch):
    isolated_env.set_password("llm-cascade", "openai", "sk-from-keyring")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    assert resolve_key(lookup_for(provider()), use_keyring=False).value == "sk-from-env"


def test_no_key_anywhere_is_missing(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "")
    resolved = resolve_key(lookup_for(provider()))
    assert (resolved.source, resolved.value) == ("missing", None)


def test_the_key_never_shows_in_a_repr(isolated_env):
    isolated_env.set_password("llm-cascade", "openai", "sk-secret-value")
    resolved = resolve_key(lookup_for(provider()))
    assert resolved.value == "sk-secret-value"
    assert "sk-secret-value" not in repr(resolved)


# --- a failing or hanging keyring ------------------------------------------------------------


def test_a_failing_keyring_warns_and_falls_back_to_the_env_var(monkeypatch):
    keyring.set_keyring(BrokenKeyring())
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    resolved = resolve_key(lookup_for(provider()))
    assert (resolved.source, resolved.value) == ("env", "sk-from-env")
    assert resolved.warning is not None
    assert "keyring unavailable for 'openai'" in resolved.warning
    assert "the collection is locked" in resolved.warning


def test_a_failing_keyring_without_an_env_var_is_missing_with_the_warning():
    keyring.set_keyring(BrokenKeyring())
    resolved = resolve_key(lookup_for(provider()))
    assert resolved.source == "missing"
    assert resolved.warning is not None and "the collection is locked" in resolved.warning


def test_keyring_errors_surface_as_keyring_unavailable():
    keyring.set_keyring(BrokenKeyring())
    with pytest.raises(KeyringUnavailable, match="KeyringError: the collection is locked"):
        keyring_get("openai")
    with pytest.raises(KeyringUnavailable):
        keyring_set("openai", "sk-1")
    with pytest.raises(KeyringUnavailable):
        keyring_delete("openai")


def test_a_keyring_that_blocks_does_not_hang_the_lookup(blocking):
    started = time.monotonic()
    with pytest.raises(KeyringUnavailable, match=r"no answer within 0\.2 s"):
        keyring_get("openai", timeout_s=0.2)
    assert blocking.entered.is_set()  # the backend really was called, and really blocked
    assert time.monotonic() - started < 3


def test_backend_name_reports_the_backend_in_use():
    keyring.set_keyring(MemoryKeyring())
    assert keys.backend_name().endswith("MemoryKeyring")
    keyring.set_keyring(BrokenKeyring())
    assert keys.backend_name().endswith("BrokenKeyring")


# --- set, get, delete ------------------------------------------------------------------------


def test_set_get_delete_round_trip(isolated_env):
    keyring_set("groq", "gsk-123")
    assert isolated_env.entries == {("llm-cascade", "groq"): "gsk-123"}
    assert keyring_get("groq") == "gsk-123"
    assert keyring_delete("groq") is True
    assert keyring_get("groq") is None
    assert keyring_delete("groq") is False  # nothing to delete is not an error
