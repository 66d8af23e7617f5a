"""Reading vendor replies: Retry-After in all its forms, scrubbing secrets and bulk
out of error text, and short messages from each vendor's error shape."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest

from llm_cascade import redaction
from llm_cascade.providers import _http, get_adapter
from llm_cascade.providers._http import MAX_MESSAGE_CHARS, parse_retry_after, scrub
from llm_cascade.providers.base import deep_merge, error_summary

NOW = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def retry_after(**headers: str) -> float | None:
    return parse_retry_after(
        httpx.Headers({k.replace("_", "-"): v for k, v in headers.items()}), NOW
    )


def http_date(epoch: float) -> str:
    return format_datetime(datetime.fromtimestamp(epoch, UTC), usegmt=True)


# --- parse_retry_after -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry_after": "120"}, 120.0),
        ({"retry_after": " 30 "}, 30.0),
        ({"retry_after": "0"}, 0.0),
        ({"retry_after": "1.5"}, 1.5),
        ({"retry_after_ms": "2500"}, 2.5),
        ({"retry_after_ms": "2500", "retry_after": "9"}, 2.5),  # the precise one wins
        ({"retry_after_ms": "soon", "retry_after": "9"}, 9.0),  # unreadable: fall back
        ({"retry_after": "-5"}, 0.0),
        ({"retry_after_ms": "-100"}, 0.0),
    ],
)
def test_retry_after_in_seconds_and_milliseconds(headers, seconds):
    assert retry_after(**headers) == seconds


def test_retry_after_as_an_http_date():
    assert retry_after(retry_after=http_date(NOW + 90)) == 90.0
    assert retry_after(retry_after="Thu, 01 Jan 2026 00:10:00 GMT") == 600.0


def test_retry_after_date_in_the_past_means_now():
    assert retry_after(retry_after=http_date(NOW - 3600)) == 0.0


def test_a_huge_retry_after_is_a_number_not_a_crash():
    # Clamping to the cap is the rule's job (test_rules); here it must just be finite.
    assert retry_after(retry_after="99999999999999999999") == 1e20
    assert retry_after(retry_after="9" * 400) is None  # overflows float: unusable


@pytest.mark.parametrize(
    "value",
    ["soon", "", "  ", "nan", "inf", "-inf", "1e999", "Thu, 99 Foo 2026", "30 seconds"],
)
def test_unreadable_retry_after_is_none(value):
    assert retry_after(retry_after=value) is None


def test_no_retry_after_header_is_none():
    assert retry_after() is None
    assert retry_after(retry_after_ms="inf") is None


# --- scrub -----------------------------------------------------------------------------------


def test_scrub_removes_every_known_secret_everywhere():
    key, header = "sk-live-0123456789", "hdr-value-0123456789"
    redaction.register(key, header)
    text = f"GET https://x.example/v1?key={key} failed; Authorization: Bearer {key}; {header}"
    cleaned = scrub(text)
    assert key not in cleaned and header not in cleaned
    assert cleaned.count("[redacted]") == 3


def test_short_values_are_not_taken_for_secrets():
    redaction.register("1", "json", "v2-beta")  # header values such as X-Debug = "1"
    assert scrub("HTTP 401: json v2-beta") == "HTTP 401: json v2-beta"


def test_a_secret_containing_another_is_redacted_whole():
    redaction.register("sk-outer-abcdef", "sk-outer-abcdef-0123456789")
    assert scrub("key sk-outer-abcdef-0123456789!") == "key [redacted]!"


def test_scrub_collapses_whitespace():
    assert scrub("  a\n\n  b\tc  ") == "a b c"


def test_scrub_escapes_control_characters():
    assert scrub("\x1b[2Jgone\x9b\x00\x07") == "\\x1b[2Jgone\\x9b\\x00\\x07"


def test_scrub_truncates_long_text_with_an_ellipsis():
    cleaned = scrub("word " * 500)
    assert len(cleaned) == MAX_MESSAGE_CHARS
    assert cleaned.endswith("…")
    assert scrub("x" * MAX_MESSAGE_CHARS) == "x" * MAX_MESSAGE_CHARS


def test_scrub_removes_the_key_before_cutting():
    key = "sk-" + "k" * 40
    redaction.register(key)
    cleaned = scrub("a" * (MAX_MESSAGE_CHARS - 10) + key)
    assert "sk-kkk" not in cleaned


# --- error_summary ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message", "code"),
    [
        (  # OpenAI
            {
                "error": {
                    "message": "Rate limit reached for gpt-4o",
                    "type": "requests",
                    "param": None,
                    "code": "rate_limit_exceeded",
                }
            },
            "rate_limit_exceeded: Rate limit reached for gpt-4o",
            "rate_limit_exceeded",
        ),
        (  # OpenAI, code already in the message: not repeated
            {
                "error": {
                    "message": "insufficient_quota: out",
                    "type": "x",
                    "code": "insufficient_quota",
                }
            },
            "insufficient_quota: out",
            "insufficient_quota",
        ),
        (  # OpenAI-compatible with only a type
            {"error": {"message": "bad model", "type": "invalid_request_error", "code": None}},
            "invalid_request_error: bad model",
            "invalid_request_error",
        ),
        (  # Anthropic
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            "overloaded_error: Overloaded",
            "overloaded_error",
        ),
        (  # Anthropic spend limit: details.error_code is the precise code
            {
                "type": "error",
                "error": {
                    "type": "rate_limit_error",
                    "message": "You have reached your spend limit",
                    "details": {"error_code": "enforced_spend_limit_reached"},
                },
            },
            "enforced_spend_limit_reached: You have reached your spend limit",
            "enforced_spend_limit_reached",
        ),
        (  # Gemini: numeric code, string status, details as a list
            {
                "error": {
                    "code": 429,
                    "message": "Resource has been exhausted (e.g. check quota).",
                    "status": "RESOURCE_EXHAUSTED",
                    "details": [{"@type": "type.googleapis.com/google.rpc.QuotaFailure"}],
                }
            },
            "RESOURCE_EXHAUSTED: Resource has been exhausted (e.g. check quota).",
            "RESOURCE_EXHAUSTED",
        ),
        (  # Ollama
            {"error": 'model "llama3" not found, try pulling it first'},
            'model "llama3" not found, try pulling it first',
            None,
        ),
        ({"message": "no error wrapper", "code": "E1"}, "E1: no error wrapper", "E1"),
    ],
)
def test_error_summary_reads_each_vendors_shape(body, message, code):
    assert error_summary(body) == (message, code)


@pytest.mark.parametrize(
    "body", [None, [], "text", 5, {"error": 5}, {"error": None}, {"detail": 1}]
)
def test_error_summary_of_an_unknown_shape_is_nothing(body):
    assert error_summary(body) == (None, None)


def test_error_summary_keeps_the_code_when_the_message_is_missing():
    assert error_summary({"error": {"code": "E2"}}) == (None, "E2")


# --- error bodies ----------------------------------------------------------------------------


@pytest.fixture
def adapter():
    return get_adapter("openai")


def describe(adapter, body: bytes) -> tuple[str, str | None]:
    """Summarise a raw error body as `_http` does: decode, then describe."""
    text, data, _ = _http._decode(body)
    return _http._describe_body(adapter, text, data, httpx.Headers())


def test_an_html_error_page_is_summarised_by_its_title(adapter):
    page = (
        b"<!DOCTYPE html>\n<html><head><TITLE>\n 502 Bad Gateway \n</TITLE></head>"
        + b"<body>"
        + b"<p>upstream</p>" * 500
        + b"</body></html>"
    )
    assert describe(adapter, page) == ("HTML error page: 502 Bad Gateway", None)


def test_an_html_page_without_a_title_still_says_it_was_html(adapter):
    assert describe(adapter, b"  <html><body>oops</body></html>") == ("HTML error page", None)


def test_a_json_error_body_gives_message_and_code(adapter):
    body = b'{"error": {"message": "Invalid model", "type": "invalid_request_error"}}'
    assert describe(adapter, body) == (
        "invalid_request_error: Invalid model",
        "invalid_request_error",
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "(empty body)"),
        (b"  \n", "(empty body)"),
        (b"upstream connect error\n", "upstream connect error"),
        (b'{"unexpected": true}', '{"unexpected": true}'),
        (b"\xff\xfebroken", "\ufffd\ufffdbroken"),
    ],
)
def test_other_bodies_are_shown_as_text(adapter, body, message):
    assert describe(adapter, body) == (message, None)


# --- deep_merge ------------------------------------------------------------------------------


def test_deep_merge_merges_nested_tables_and_replaces_the_rest():
    base = {"a": 1, "opts": {"x": 1, "y": {"z": 1}}, "list": [1]}
    merged = deep_merge(base, {"opts": {"y": {"w": 2}}, "list": [2], "new": True})
    assert merged == {"a": 1, "opts": {"x": 1, "y": {"z": 1, "w": 2}}, "list": [2], "new": True}
    assert base == {"a": 1, "opts": {"x": 1, "y": {"z": 1}}, "list": [1]}  # not modified
