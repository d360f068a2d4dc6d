"""The common encodings of a secret value, so the redactor masks them too.

A step that prints ``base64(secret)``, its hex digits or its URL-encoding leaks the
secret as surely as printing it; :func:`derived_forms` lists those encodings for
:func:`smithers.shared.redaction.register_secret` and the sandbox log writer.

Base64 depends on where the value starts in the encoded stream (its offset modulo 3),
so for each of the three alignments the characters that depend on the value alone are
taken (standard and URL-safe alphabets). Hex in both cases. URL-encoding as
``quote`` and ``quote_plus`` write it, when that differs from the value.

Not caught (docs/sandbox.md, "Threat model"): any other transformation (reversed,
split, XOR, compressed, encrypted, one character per line, a hash), encodings of
part of the value, and forms shorter than :data:`MIN_FORM` characters.
"""

from __future__ import annotations

import base64
from urllib.parse import quote, quote_plus

__all__ = ["MIN_FORM", "derived_forms"]

MIN_FORM = 8
"""Shorter derived forms are not masked: they would mask innocent text."""


def _base64_cores(raw: bytes) -> set[str]:
    forms: set[str] = set()
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode().rstrip("=")
        start = -(-8 * shift // 6)  # first character made of the value's bits only
        end = 8 * (shift + len(raw)) // 6  # past the last such character
        core = encoded[start:end]
        forms.update((core, core.replace("+", "-").replace("/", "_")))
    full = base64.b64encode(raw).decode()
    forms.update((full, base64.urlsafe_b64encode(raw).decode()))
    return forms


def derived_forms(value: str) -> set[str]:
    """The base64, hex and URL-encoded forms of ``value`` (never ``value`` itself)."""
    raw = value.encode("utf-8", "surrogatepass")
    forms = _base64_cores(raw)
    forms.update((raw.hex(), raw.hex().upper(), quote(value, safe=""), quote_plus(value, safe="")))
    return {form for form in forms if len(form) >= MIN_FORM and form != value}
