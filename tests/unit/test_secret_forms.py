"""Derived forms of secrets (smithers.shared.secret_forms) and their redaction."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import quote, quote_plus

import pytest

from smithers.shared.redaction import MASK, redact, redact_text, register_secret
from smithers.shared.secret_forms import MIN_FORM, derived_forms

SECRET = "s3cr3t/v4lue+x=y&more"


@pytest.fixture(scope="module", autouse=True)
def registered() -> None:
    register_secret(SECRET)


@pytest.mark.parametrize("prefix", [b"", b"a", b"ab", b"abc", b"user:"])
def test_base64_is_masked_at_every_offset_in_both_alphabets(prefix: bytes) -> None:
    data = prefix + SECRET.encode() + b"\n"
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        encoded = encode(data).decode()
        masked = redact_text(f"header {encoded} trailer")
        assert MASK in masked
        # what is left of the encoding decodes to no more than two bytes of the secret
        assert encoded not in masked


def test_hex_and_url_encodings_are_masked_in_text_and_json() -> None:
    hexed = binascii.hexlify(SECRET.encode()).decode()
    for form in (hexed, hexed.upper(), quote(SECRET, safe=""), quote_plus(SECRET)):
        assert redact_text(f"x={form};") == f"x={MASK};"
    assert redact({"log": [f"url ?t={quote(SECRET, safe='')}"]}, keys=False) == {"log": [f"url ?t={MASK}"]}


def test_short_forms_are_not_registered() -> None:
    assert all(len(form) >= MIN_FORM for form in derived_forms("abcd"))
    assert SECRET not in derived_forms(SECRET)
    assert redact_text("plain text with 61 62 63") == "plain text with 61 62 63"
