"""Workflow registration: import modules named in SMITHERS_WORKFLOWS, validate, hash.

Each module may define any number of :class:`smithers.shared.workflow.Workflow` objects at top
level. A module's revision is the SHA-256 of its source file, recorded on every run.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from smithers.shared.errors import InvalidWorkflow, UnknownWorkflow
from smithers.shared.workflow import Workflow


@dataclass(frozen=True)
class Registered:
    """A validated workflow with the module it came from and that module's revision."""

    workflow: Workflow
    module: str
    revision: str


class Registry:
    """Workflows by name."""

    def __init__(self) -> None:
        self._by_name: dict[str, Registered] = {}

    def register(self, wf: Workflow, module: str = "", revision: str = "") -> Registered:
        """Validate and add a workflow; a name registered twice is refused."""
        if wf.name in self._by_name:
            raise InvalidWorkflow(
                f"workflow {wf.name!r} is registered twice ({self._by_name[wf.name].module} and {module})"
            )
        wf.validate()
        entry = Registered(wf, module, revision or hashlib.sha256(wf.name.encode()).hexdigest())
        self._by_name[wf.name] = entry
        return entry

    def get(self, name: str) -> Registered:
        """The workflow called ``name``; UnknownWorkflow names the known ones."""
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(sorted(self._by_name)) or "none"
            raise UnknownWorkflow(f"unknown workflow {name!r} (registered: {known})") from None

    def find(self, name: str) -> Registered | None:
        """The workflow called ``name``, or None."""
        return self._by_name.get(name)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)


def module_revision(module: ModuleType) -> str:
    """SHA-256 of the module's source file (of its name when it has no file)."""
    path = getattr(module, "__file__", None)
    data = Path(path).read_bytes() if path else module.__name__.encode()
    return hashlib.sha256(data).hexdigest()


def load_registry(spec: str, search_path: str | None = None) -> Registry:
    """Import each comma-separated module of ``spec`` and register its workflows.

    ``search_path`` (the current directory by default) is put on ``sys.path`` first so
    that ``smithers.examples.hello`` resolves from a checkout, as ``celery -A`` does.
    """
    path = str(Path(search_path or ".").resolve())
    if path not in sys.path:
        sys.path.insert(0, path)
    registry = Registry()
    for name in [m.strip() for m in spec.split(",") if m.strip()]:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise InvalidWorkflow(f"cannot import workflow module {name!r}: {exc}") from exc
        revision = module_revision(module)
        found = [obj for _, obj in inspect.getmembers(module) if isinstance(obj, Workflow)]
        if not found:
            raise InvalidWorkflow(f"module {name!r} defines no Workflow")
        for wf in found:
            registry.register(wf, name, revision)
    return registry
