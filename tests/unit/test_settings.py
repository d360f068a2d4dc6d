"""The configuration reference: docs/configuration.md is the rendering of the
declarations, and every SMITHERS_* variable named in the code is declared."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from smithers.shared import settings
from smithers.shared.config import SchedulerConfig, WorkerConfig
from smithers.shared.errors import InvalidInput

ROOT = Path(__file__).resolve().parents[2]
VARIABLE = re.compile(r"SMITHERS_[A-Z0-9_]+")
# Names in the SMITHERS_ space that configure nothing: the prefix of the variables a
# worker may inject into steps as secrets (smithers/workers/secrets.py).
NOT_SETTINGS = {"SMITHERS_SECRET_"}


def test_docs_configuration_md_is_the_rendering_of_the_declarations() -> None:
    rendered = settings.render_markdown()
    on_disk = (ROOT / "docs" / "configuration.md").read_text()
    assert on_disk == rendered, (
        "docs/configuration.md is stale: run `smithers config --markdown > docs/configuration.md`"
    )


def test_every_smithers_variable_in_the_code_is_in_the_reference() -> None:
    declared = set(settings.names())
    missing: dict[str, list[str]] = {}
    for path in sorted((ROOT / "smithers").rglob("*.py")):
        for name in VARIABLE.findall(path.read_text()):
            # a prefix (SMITHERS_TOKEN_TTL_..., SMITHERS_SANDBOX_MAX_<FIELD>) names a family
            known = any(d.startswith(name) for d in declared) if name.endswith("_") else name in declared
            if not known and name not in NOT_SETTINGS:
                missing.setdefault(name, []).append(str(path.relative_to(ROOT)))
    assert not missing, f"undeclared in smithers/shared/settings.py: {missing}"


def test_each_variable_is_declared_once() -> None:
    names = settings.names()
    assert len(names) == len(set(names))


def test_the_readers_take_their_defaults_from_the_declarations() -> None:
    # given an empty environment, then every value is the declared default
    assert SchedulerConfig.from_env({}) == SchedulerConfig()
    worker = WorkerConfig.from_env({"SMITHERS_CONCURRENCY": "3"})
    assert (worker.lease_s, worker.visibility_timeout_s, worker.concurrency) == (4.0, 3600.0, 3)


@pytest.mark.parametrize(
    ("setting", "raw", "message"),
    [
        (settings.MAX_LOST, "many", "SMITHERS_MAX_LOST must be an integer"),
        (settings.SWEEP_INTERVAL, "0", "SMITHERS_SWEEP_INTERVAL must be > 0"),
        (settings.LOG_FORMAT, "xml", "SMITHERS_LOG_FORMAT must be one of auto, text, json"),
        (settings.TOKEN_TTL_PERSON_MAX, "soon", "SMITHERS_TOKEN_TTL_PERSON_MAX 'soon' is not a duration"),
    ],
)
def test_a_bad_value_is_refused_with_the_variable_name(
    setting: settings.Setting[object], raw: str, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        setting.read({setting.name: raw})


def test_empty_means_the_default() -> None:
    assert settings.SSE_MAX_SECONDS.read({"SMITHERS_SSE_MAX_SECONDS": "  "}) == 3600.0
    assert settings.PG_PREPARE.read({"SMITHERS_PG_PREPARE": "0"}) is False
