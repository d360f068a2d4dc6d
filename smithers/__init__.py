"""Smithers: a durable workflow engine for long-lived agent workflows.

Workflows are written against this surface (``from smithers import Workflow``); the
processes live in ``smithers.gateway``, ``smithers.scheduler`` and ``smithers.workers``,
their common code in ``smithers.shared`` and the command line in ``smithers.cli``.
"""

from __future__ import annotations

from smithers.shared import CachePolicy, DecisionContext, RetryPolicy, StepContext, Workflow
from smithers.shared.budget import Budget
from smithers.shared.sandbox import SandboxSpec, VolumeMount

__all__ = [
    "Budget",
    "CachePolicy",
    "DecisionContext",
    "RetryPolicy",
    "SandboxSpec",
    "StepContext",
    "VolumeMount",
    "Workflow",
]
