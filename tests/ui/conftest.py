"""The console under a real browser: a live gateway (threaded WSGI server) on a real store,
a real scheduler and step worker, and Debian's Chromium driven by Playwright.

Chromium comes from apt (.ci/chromium-setup.sh), never from a browser download: the
tests skip without /usr/bin/chromium on a laptop and fail under CI=true.
Screenshots go to ``$SMITHERS_ARTIFACTS/ui`` (default ``artifacts/ui``); with
``SMITHERS_DOCS_SCREENSHOTS=1`` the ones the docs show are written to docs/images/ too.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from smithers.gateway.app import create_app
from smithers.gateway.auth import mint
from smithers.gateway.services import services
from smithers.shared.registry import Registry, load_registry
from tests.conftest import missing
from tests.integration.conftest import ROOT, Engine
from tests.integration.gateway.support import config

CHROMIUM = os.environ.get("SMITHERS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
UI_WORKFLOWS = "tests.ui.workflows"
ARTIFACTS = Path(os.environ.get("SMITHERS_ARTIFACTS", ROOT / "artifacts")) / "ui"
DOCS_IMAGES = ROOT / "docs" / "images"


class LiveGateway:
    """A gateway app served on a free loopback port, with token helpers."""

    def __init__(self, database_url: str, redis_url: str, registry: Registry) -> None:
        self.app = create_app(
            config(database_url, redis_url, sse_max_s=30.0, sse_keepalive_s=1.0),
            registry=registry,
        )
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        with self.app.app_context():
            self.svc = services()
        self.store = self.svc.store

    def token(self, subject: str, scopes: str) -> str:
        grant = self.svc.control.issue(subject=subject, scopes=scopes, issuer="test", actor="test")
        with self.app.app_context():
            return mint(grant)

    def close(self) -> None:
        self.server.shutdown()
        with self.app.app_context():
            services().close()


@pytest.fixture
def ui_registry() -> Registry:
    return load_registry(UI_WORKFLOWS, str(ROOT))


@pytest.fixture
def live(sqlite_url: str, redis_url: str, tmp_path: Path, ui_registry: Registry) -> Iterator[LiveGateway]:
    """Scheduler, step worker and gateway on one SQLite store."""
    engine = Engine(sqlite_url, redis_url, tmp_path, {"SMITHERS_WORKFLOWS": UI_WORKFLOWS})
    engine.scheduler()
    engine.worker()
    gateway = LiveGateway(sqlite_url, redis_url, ui_registry)
    try:
        yield gateway
    finally:
        gateway.close()
        engine.stop_all()


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        missing(f"Chromium ({CHROMIUM}; run .ci/chromium-setup.sh)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the playwright package (pip install -e '.[dev]')")
    # launch() gives the browser a fresh, temporary profile of its own (and removes it)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Any:
    """``shots(page, name, docs=False)``: a full-page screenshot as a CI artifact, and in
    docs/images/ when SMITHERS_DOCS_SCREENSHOTS=1 and ``docs`` is set."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def take(page: Any, name: str, docs: bool = False) -> Path:
        path = ARTIFACTS / f"{request.node.name}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        if docs and os.environ.get("SMITHERS_DOCS_SCREENSHOTS") == "1":
            DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, DOCS_IMAGES / f"console-{name}.png")
        return path

    return take
