"""Which names a step may take as secrets (smithers.workers.secrets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from smithers.shared.errors import InvalidInput
from smithers.workers.secrets import injectable, resolve_secrets

ENV = {
    "SMITHERS_DATABASE_URL": "postgresql://smithers:pw@db/smithers",
    "SMITHERS_SECRET_API": "api-value",
    "OPENAI_API_KEY": "sk-value",
}


def test_only_injectable_names_come_from_the_environment() -> None:
    assert resolve_secrets(["SMITHERS_SECRET_API"], None, ENV) == {"SMITHERS_SECRET_API": "api-value"}
    allow = frozenset({"OPENAI_API_KEY", "SMITHERS_DATABASE_URL"})
    assert resolve_secrets(["OPENAI_API_KEY"], None, ENV, allow) == {"OPENAI_API_KEY": "sk-value"}
    with pytest.raises(InvalidInput, match="not allowed for injection"):
        resolve_secrets(["OPENAI_API_KEY"], None, ENV)
    # the worker's configuration never, not even when listed
    with pytest.raises(InvalidInput, match="worker configuration"):
        resolve_secrets(["SMITHERS_DATABASE_URL"], None, ENV, allow)
    assert not injectable("SMITHERS_DATABASE_URL", allow)


def test_mounted_files_are_injectable_but_not_as_configuration(tmp_path: Path) -> None:
    (tmp_path / "API_TOKEN").write_text("from-a-file\n")
    (tmp_path / "SMITHERS_JWT_SECRET").write_text("jwt\n")
    assert resolve_secrets(["API_TOKEN"], tmp_path, {}) == {"API_TOKEN": "from-a-file"}
    with pytest.raises(InvalidInput, match="worker configuration"):
        resolve_secrets(["SMITHERS_JWT_SECRET"], tmp_path, {})
