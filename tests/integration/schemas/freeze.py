"""Write the frozen baseline of each schema version this project shipped.

    .venv/bin/python tests/integration/schemas/freeze.py

For each version N, the main commit that introduced it (the first one whose
``MIGRATIONS`` ends at N) has its ``schema.py`` compiled to DDL for SQLite and PostgreSQL, written as
``v<N>.<dialect>.sql`` beside this file: what a database created by that release
held. Run it once when a release adds a version (add the commit below); the files are
then never changed (tests/integration/test_schema.py migrates each and compares).
"""

from __future__ import annotations

import subprocess
import types
from pathlib import Path

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.schema import CreateIndex, CreateTable

HERE = Path(__file__).resolve().parent
# version -> the first commit on main's first-parent history whose MIGRATIONS ends at
# it (branch commits do not count: parallel branches numbered versions of their own)
RELEASES = {
    1: "b6de4d5",
    2: "f3206eb",
    3: "b5d2c03",
    4: "30a3c27",
    5: "29cc8f2",
    6: "246ce30",
    7: "d288676",
    8: "a6c8296",
}
PATHS = ("smithers/shared/store/schema.py", "shared/store/schema.py")


def source(commit: str) -> str:
    for path in PATHS:
        done = subprocess.run(["git", "show", f"{commit}:{path}"], capture_output=True, text=True, cwd=HERE)
        if done.returncode == 0:
            return done.stdout
    raise SystemExit(f"no schema.py at {commit}")


def ddl(text: str, dialect: object) -> str:
    module = types.ModuleType("frozen_schema")
    exec(compile(text, "schema.py", "exec"), module.__dict__)
    metadata = module.metadata
    out = []
    for table in metadata.sorted_tables:
        out.append(str(CreateTable(table).compile(dialect=dialect)).strip())  # type: ignore[arg-type]
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            out.append(str(CreateIndex(index).compile(dialect=dialect)).strip())  # type: ignore[arg-type]
    return ";\n\n".join(out) + ";\n"


def main() -> None:
    for version, commit in RELEASES.items():
        text = source(commit)
        for name, dialect in (("sqlite", sqlite.dialect()), ("postgresql", postgresql.dialect())):
            (HERE / f"v{version}.{name}.sql").write_text(
                f"-- schema version {version} ({commit})\n" + ddl(text, dialect)
            )


if __name__ == "__main__":
    main()
