"""Code shared by the gateway, the scheduler and the workers."""

from __future__ import annotations

from smithers.shared.context import DecisionContext, StepContext
from smithers.shared.policy import CachePolicy, RetryPolicy
from smithers.shared.workflow import Workflow

__all__ = ["CachePolicy", "DecisionContext", "RetryPolicy", "StepContext", "Workflow"]
