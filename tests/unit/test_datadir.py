"""How commands find the data directory, and the record `smithers up` leaves in it."""

from __future__ import annotations

import json
from pathlib import Path

from smithers.shared.config import resolve_deployment
from smithers.shared.datadir import Record, find_data_dir, read_record, where_looked, write_record


def test_the_nearest_recorded_smithers_dir_of_the_cwd_or_a_parent_is_found(tmp_path: Path) -> None:
    project = tmp_path / "project"
    deep = project / "a" / "b"
    deep.mkdir(parents=True)
    (project / "a" / ".smithers").mkdir()  # no record: not a deployment
    write_record(project / ".smithers", Record("flows", project, "v7"))

    assert find_data_dir({}, cwd=deep) == project / ".smithers"
    assert find_data_dir({}, cwd=tmp_path) == tmp_path / ".smithers"  # not found: the default
    assert find_data_dir({"SMITHERS_DATA_DIR": str(tmp_path / "env")}, cwd=deep) == tmp_path / "env"
    assert find_data_dir({"SMITHERS_DATA_DIR": "x"}, str(tmp_path / "flag"), deep) == tmp_path / "flag"
    assert where_looked({}, cwd=deep) == f"looked for .smithers/deployment.json in {deep} and its parents"


def test_the_record_fills_in_what_the_environment_does_not_set(tmp_path: Path) -> None:
    project = tmp_path / "project"
    write_record(project / ".smithers", Record("flows,more", project, "v7", redis_url="redis://r:6379/0"))

    dep = resolve_deployment({}, cwd=project)
    assert (dep.workflows, dep.deployment_version, dep.project_dir) == ("flows,more", "v7", project)
    assert dep.redis_url == "redis://r:6379/0"
    assert dep.database_url == f"sqlite:///{project / '.smithers' / 'smithers.db'}"

    env = {"SMITHERS_WORKFLOWS": "mine", "SMITHERS_DEPLOYMENT_VERSION": "v8"}
    dep = resolve_deployment(env, cwd=project)
    assert (dep.workflows, dep.deployment_version) == ("mine", "v8")
    up = resolve_deployment({}, cwd=project, recorded=False)  # `smithers up` itself
    assert (up.workflows, up.redis_url, up.project_dir) == ("", None, None)


def test_the_record_keeps_no_password_and_only_its_owner_reads_it(tmp_path: Path) -> None:
    record = Record("flows", tmp_path, "dev", "postgresql://app:s3cret@db/smithers", "redis://:pw@r:6379/0")
    path = write_record(tmp_path, record)

    assert "s3cret" not in path.read_text() and "pw@" not in path.read_text()
    assert json.loads(path.read_text())["database_url"] == "postgresql://app@db/smithers"
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_record(tmp_path) == Record(
        "flows", tmp_path, "dev", "postgresql://app@db/smithers", "redis://r:6379/0"
    )
    path.write_text("{not json")
    assert read_record(tmp_path) is None
