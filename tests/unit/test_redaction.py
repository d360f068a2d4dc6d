"""Redaction of secrets and token-like strings, and credential-like input keys."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smithers.shared import redaction
from smithers.shared.errors import InvalidInput
from smithers.shared.operations import check_input, parse_input
from smithers.shared.redaction import MASK, RedactingFilter, redact, redact_text, register_secret


def test_known_secret_values_are_masked_everywhere() -> None:
    register_secret("hunter2-very-secret")
    assert redact_text("password is hunter2-very-secret!") == f"password is {MASK}!"
    assert redact({"a": ["x hunter2-very-secret y"]}) == {"a": [f"x {MASK} y"]}


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: Bearer abcdefghijklmnop",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXZhbHVl",
        "key sk-abcdefghijklmnopqrstuvwx",
        "stripe sk_live_51HqLyjWDarjtT1zdp7dc",
        "restricted rk_test_abcdefghijklmnopqrst",
        "webhook secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "ghp_abcdefghijklmnopqrstuvwxyz0123",
        "AKIAABCDEFGHIJKLMNOP",
    ],
)
def test_token_like_strings_are_masked(text: str) -> None:
    assert MASK in redact_text(text)


def test_string_values_under_credential_keys_are_masked_but_counts_are_not() -> None:
    assert redact({"api_key": "plain", "token_count": 5, "note": "ok"}) == {
        "api_key": MASK,
        "token_count": 5,
        "note": "ok",
    }


def test_logging_filter_redacts_formatted_messages() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "token %s", ("Bearer abcdefghijklmnop",), None)
    RedactingFilter().filter(record)
    assert record.getMessage() == f"token {MASK}"


@pytest.mark.parametrize(
    "key",
    ["token", "secret", "password", "api_key", "private_key", "GITHUB_TOKEN", "apiKey_x", "db-password"],
)
def test_credential_like_input_keys_are_refused_naming_the_key(key: str) -> None:
    with pytest.raises(InvalidInput, match=key):
        check_input({"outer": {key: "v"}})


def test_input_must_be_a_json_object() -> None:
    with pytest.raises(InvalidInput, match="JSON object"):
        parse_input("[1]")
    with pytest.raises(InvalidInput, match="not valid JSON"):
        parse_input("{nope")
    assert parse_input('{"name": "ada", "tokens": 3}') == {"name": "ada", "tokens": 3}


_FRAGMENTS = [  # each pattern's token whole, and pieces of them
    "Bearer abcdefghijklmnop", "eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dX", "sk-abcdefghijklmnopqrstuvwx",
    "sk_live_51HqLyjWDarjtT1zdp7dc", "whsec_MfKQ9r8GKYqrTwjUPD8I", "ghp_abcdefghijklmnopqrstuvwxyz",
    "xoxb-0123456789ab", "AKIAABCDEFGHIJKLMNOP", "postgres://u:p@host",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----",
    "https://", "u:", "p@", "eyJ", "sk-", "_live_", "AKIA", " ", "\n", "abcdefghij", "-",
]  # fmt: skip


@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=12).map("".join))
@settings(max_examples=300, deadline=None)
def test_the_quick_check_before_the_patterns_never_skips_text_a_pattern_would_mask(text: str) -> None:
    # given text built from the pieces the token patterns look for
    # when it is redacted, then it is what every pattern applied in turn gives
    full = text
    for pattern in redaction._PATTERNS:
        full = pattern.sub(MASK, full)
    full = redaction._URL_PASSWORD.sub(rf"\1{MASK}@", full)
    assert redact_text(text) == full
