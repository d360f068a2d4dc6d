"""Redaction of secrets from log lines and event payloads.

Two nets: the exact values of secrets this process knows (registered when a worker
resolves them), and patterns of token-like strings (bearer tokens, JWTs, common key
formats) whatever their origin.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

from smithers.shared.secret_forms import derived_forms

MASK = "[redacted]"
_PATTERNS = [
    re.compile(r"(?i)\bbearer\s+[a-z0-9._~+/=-]{8,}"),
    re.compile(r"\beyJ[a-zA-Z0-9_-]{5,}\.[a-zA-Z0-9_-]{5,}\.[a-zA-Z0-9_-]{5,}"),  # JWT
    re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_-]{16,}"),  # OpenAI / Stripe style keys
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"),  # GitHub tokens
    re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),  # Slack tokens
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"),
]
_SENSITIVE_KEY = re.compile(
    r"(?i)(^|_|-)(token|secret|password|passwd|api[_-]?key|private[_-]?key|credential|authorization)s?($|_|-)"
)
_known: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str) -> None:
    """Remember a secret value so every later redaction in this process masks it,
    and its base64, hex and URL-encoded forms (:func:`derived_forms`)."""
    if len(value) >= 4:
        with _lock:
            _known.add(value)
            _known.update(derived_forms(value))


def sensitive_key(key: str) -> bool:
    """True for keys that look like they hold a credential (token, password, api_key...)."""
    return bool(_SENSITIVE_KEY.search(key))


def redact_text(text: str) -> str:
    """Mask known secret values and token-like strings in ``text``."""
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for value in known:
        if value in text:
            text = text.replace(value, MASK)
    for pattern in _PATTERNS:
        text = pattern.sub(MASK, text)
    return text


def redact(value: Any, keys: bool = True) -> Any:
    """Redact a JSON-like value: strings are scanned for secrets and token-like text;
    with ``keys``, string values under credential-like keys are masked whole."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {
            k: (
                MASK
                if keys and isinstance(k, str) and isinstance(v, str) and v and sensitive_key(k)
                else redact(v, keys)
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v, keys) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """A logging filter that redacts the formatted message of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace the record's message with its redacted rendering."""
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        record.msg = redact_text(message)
        record.args = None
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True
