"""Signed webhooks' results as the API returns them (``/v1/control/idp``, ``/billing``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from smithers.shared.api.model import Resource


class WebhookResult(Resource):
    """What a delivery did (once per `webhook-id`)."""

    webhook_id: str
    type: str
    effect: Literal["grant_recorded", "unchanged", "grant_revoked", "subject_revoked", "ignored"]
    grants: tuple[str, ...] = Field(description="Grants recorded (or already so).")
    revoked: tuple[str, ...] = Field(description="Grants revoked.")
