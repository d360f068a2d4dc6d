"""`pip install smithers` with no extras: the wheel installs only the `smithers` package
and, in a fresh virtual environment, runs the hello example on the embedded default."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROCESS_NAMES = ["shared", "gateway", "scheduler", "workers", "examples", "cli"]
EXTRAS = ["psycopg", "psycopg2", "psycogreen", "docker", "flower"]  # what the extras bring


def build_wheel(tmp_path: Path) -> Path:
    """`pip wheel --no-deps` of a copy of the sources (the build writes nothing in the checkout)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "smithers", src / "smithers", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(src)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("smithers-*.whl")
    return wheel


def install(venv: Path, wheel: Path) -> None:
    """A fresh venv with the wheel and its base dependencies only (from the package index)."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0 and os.environ.get("CI") != "true":
        pytest.skip(f"pip could not install the base dependencies: {done.stderr.strip()[-500:]}")
    assert done.returncode == 0, done.stderr


def importable(venv: Path, cwd: Path, modules: list[str]) -> list[str]:
    """Which of ``modules`` the venv's interpreter can import from ``cwd``."""
    code = f"import importlib.util as u; print(','.join(m for m in {modules!r} if u.find_spec(m)))"
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code], cwd=cwd, capture_output=True, text=True, check=True
    )
    return [m for m in done.stdout.strip().split(",") if m]


@pytest.mark.slow
def test_the_wheel_without_extras_runs_hello_on_the_embedded_default(tmp_path: Path) -> None:
    # given the wheel, installed with no extras into a fresh venv outside the checkout
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        (record,) = [n for n in names if n.endswith(".dist-info/RECORD")]
        recorded = [line.split(",")[0] for line in whl.read(record).decode().splitlines() if line]
    tops = {name.split("/")[0] for name in names + recorded}
    assert tops == {"smithers", record.split("/")[0]}, tops
    assert not tops & set(PROCESS_NAMES)
    # the console ships its built files: installing and serving /ui/ needs no Node toolchain
    shipped = {n.rsplit("/", 1)[1] for n in names if n.startswith("smithers/gateway/console/")}
    assert {"index.html", "app.js", "app.css", "api.js", "schema.js"} <= shipped, shipped
    venv = tmp_path / "venv"
    install(venv, wheel)
    found = importable(venv, tmp_path, EXTRAS + PROCESS_NAMES)
    assert found == [], found  # no driver of an extra, no top-level shared, gateway, workers, ...

    # when `smithers up --run hello --once` runs in an empty directory with a clean environment
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMITHERS_", "VIRTUAL_ENV"))}
    env.pop("PYTHONPATH", None)
    env["SMITHERS_WORKFLOWS"] = "smithers.examples.hello"
    result = subprocess.run(
        [str(venv / "bin" / "smithers"), "up", "--run", "hello", "--once", "--port", "0", "--sandbox", "off"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    # then the run succeeded, from the installed package, with everything under .smithers/
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"shout": "HELLO, WORLD!"' in result.stdout
    assert sorted(p.name for p in work.iterdir()) == [".smithers"]
