"""Code shared by the gateway, the scheduler and the workers."""

from __future__ import annotations

from shared.context import DecisionContext, StepContext
from shared.policy import CachePolicy, RetryPolicy
from shared.workflow import Workflow

__all__ = ["CachePolicy", "DecisionContext", "RetryPolicy", "StepContext", "Workflow"]
