"""Redaction of secrets from log lines and event payloads.

Two nets: the exact values of secrets this process knows (registered when a worker
resolves them), and patterns of token-like strings (bearer tokens, JWTs, common key
formats) whatever their origin.
"""

from __future__ import annotations

import logging
import re
import threading
from functools import lru_cache
from typing import Any

from smithers.shared.secret_forms import derived_forms

MASK = "[redacted]"
_PATTERNS = [
    re.compile(r"(?i)\bbearer\s+[a-z0-9._~+/=-]{8,}"),
    re.compile(r"\beyJ[a-zA-Z0-9_-]{5,}\.[a-zA-Z0-9_-]{5,}\.[a-zA-Z0-9_-]{5,}"),  # JWT
    re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_-]{16,}"),  # OpenAI style keys
    re.compile(r"\b(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"),  # Stripe keys
    re.compile(r"\bwhsec_[A-Za-z0-9+/=]{16,}"),  # Standard Webhooks (Svix, Stripe) signing secrets
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"),  # GitHub tokens
    re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),  # Slack tokens
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"),
]
# Credential words, matched against a key's words after normalisation (see key_words):
# ``accessToken``, ``client-secret``, ``GITHUB_TOKEN``, ``db.pwd`` and ``apiKey`` all hit.
CREDENTIAL_WORDS = frozenset(
    {
        "token", "tokens", "secret", "secrets", "password", "passwords", "passwd", "pwd", "pass",
        "passphrase", "apikey", "auth", "authorization", "credential", "credentials",
        "privatekey", "bearer", "cookie",
    }
)  # fmt: skip
# Words that, last in a key, make it describe a credential instead of holding one:
# ``secret_name``, ``password_policy``, ``token_count``, ``private_key_path``. Any other
# last word leaves a key with a credential word in it sensitive (``apiKey_x``).
DESCRIPTOR_WORDS = frozenset(
    {
        "name", "names", "policy", "policies", "count", "counts", "path", "paths", "file", "files",
        "dir", "id", "ids", "ref", "refs", "type", "types", "kind", "length", "len", "ttl",
        "expiry", "expires", "expiration", "age", "version", "format", "hint", "label", "labels",
        "field", "fields", "env", "var", "scope", "scopes", "limit", "limits", "max", "min",
        "size", "rules", "strength", "required", "enabled", "header", "url", "endpoint", "usage",
        "budget", "rotation", "provider", "store", "source", "location", "description",
    }
)  # fmt: skip
_URL_PASSWORD = re.compile(r"\b([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@", re.IGNORECASE)
# Text without any of these (case aside) cannot match a pattern above: each pattern's
# match contains one. One search of them saves the ten substitutions for most text
# (event payloads: ids, names, numbers), which cost ~100 µs per event (docs/benchmarks.md).
_MAY_MATCH = re.compile(
    r"bearer|eyj|[spr]k[-_]|whsec_|gh[pousr]_|xox[abprs]-|akia|-----begin|://", re.IGNORECASE
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


def key_words(key: str) -> list[str]:
    """The lower-case words of a key: camelCase, snake_case, kebab-case, dots and spaces
    split; ``api_key``/``apiKey`` and ``private_key`` joined to ``apikey``/``privatekey``."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", key)
    spaced = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", spaced)
    words = [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]
    joined: list[str] = []
    for word in words:
        if word == "key" and joined and joined[-1] in ("api", "private", "access", "secret", "client"):
            joined[-1] += "key"
        else:
            joined.append(word)
    return joined


@lru_cache(maxsize=4096)  # a pure function of the key, asked for every key of every payload
def sensitive_key(key: str) -> bool:
    """True for keys that name a credential (``token``, ``accessToken``, ``db_password``,
    ``apiKey``, ``pwd``, ``client-secret``...): one of its words (:func:`key_words`) is a
    credential word and its last word is no descriptor (:data:`DESCRIPTOR_WORDS`):
    ``secret_name``, ``password_policy``, ``token_count`` or ``private_key_path`` describe
    a credential without holding one."""
    words = key_words(key)
    if not words or words[-1] in DESCRIPTOR_WORDS:
        return False
    return any(w in CREDENTIAL_WORDS or w in ("accesskey", "secretkey", "clientkey") for w in words)


def url_password(text: str) -> bool:
    """True when ``text`` holds a URL with a password in its userinfo (``scheme://u:p@host``)."""
    return bool(_URL_PASSWORD.search(text))


def redact_text(text: str) -> str:
    """Mask known secret values and token-like strings in ``text``."""
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for value in known:
        if value in text:
            text = text.replace(value, MASK)
    if not _MAY_MATCH.search(text):
        return text
    for pattern in _PATTERNS:
        text = pattern.sub(MASK, text)
    return _URL_PASSWORD.sub(rf"\1{MASK}@", text)


def redact(value: Any, keys: bool = True) -> Any:
    """Redact a JSON-like value: strings, dict keys included, are scanned for secrets and
    token-like text; with ``keys``, string values under credential-like keys are masked whole.

    A key that held a secret becomes ``[redacted]`` (``[redacted]#2``... when several do)."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        result: dict[Any, Any] = {}
        for k, v in value.items():
            key = _unique_key(redact_text(k), result) if isinstance(k, str) else k
            masked = keys and isinstance(k, str) and isinstance(v, str) and v and sensitive_key(k)
            result[key] = MASK if masked else redact(v, keys)
        return result
    if isinstance(value, list | tuple):
        return [redact(v, keys) for v in value]
    return value


def _unique_key(key: str, taken: dict[Any, Any]) -> str:
    if key not in taken:
        return key
    n = 2
    while f"{key}#{n}" in taken:
        n += 1
    return f"{key}#{n}"


class RedactingFormatter(logging.Formatter):
    """Wraps a formatter and redacts the whole line it renders: message, arguments,
    traceback, stack and extra fields alike, after every one has been formatted."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        """The inner formatter's line, redacted."""
        return redact_text(self.inner.format(record))


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
