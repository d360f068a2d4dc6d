"""The Standard Webhooks signature check and the normalization of deliveries (pure)."""

from __future__ import annotations

import base64

import pytest

from smithers.shared.errors import Forbidden, InvalidInput, Unauthorized
from smithers.shared.grants import GrantKind, Scope
from smithers.shared.webhook import (
    Ignore,
    RecordGrant,
    RevokeSubject,
    Source,
    WebhookConfig,
    parse,
    parse_secrets,
    sign,
    verify,
)

# the test vector of the Standard Webhooks reference libraries
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
STAMP = 1614265330
BODY = b'{"test": 2432232314}'
EXPECTED = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
ALL = frozenset(Scope)


def headers(signature: str, webhook_id: str = MSG_ID, stamp: int = STAMP) -> dict[str, str]:
    return {"webhook-id": webhook_id, "webhook-timestamp": str(stamp), "webhook-signature": signature}


def check(h: dict[str, str], keys: tuple[bytes, ...], now: float = STAMP, body: bytes = BODY) -> object:
    return verify(Source.IDP, keys, h.get, body, now=now, tolerance_s=300)


def test_the_reference_vector() -> None:
    (key,) = parse_secrets(SECRET, "x")
    assert sign(key, MSG_ID, STAMP, BODY) == EXPECTED
    delivery = check(headers(EXPECTED), (key,))
    assert delivery == type(delivery)(Source.IDP, MSG_ID, STAMP)  # type: ignore[call-arg]


def test_rotation_several_secrets_and_several_signatures() -> None:
    (key,) = parse_secrets(SECRET, "x")
    other = b"o" * 32
    check(headers(f"v1,{base64.b64encode(b'x' * 32).decode()} {EXPECTED}"), (key,))  # the second matches
    check(headers(EXPECTED), (other, key))  # a secret among the endpoint's
    with pytest.raises(Unauthorized, match="no v1 signature"):
        check(headers(EXPECTED), (other,))
    with pytest.raises(Unauthorized, match="no v1 signature"):
        check(headers(EXPECTED.replace("v1,", "v1a,")), (key,))


@pytest.mark.parametrize(
    ("skew", "accepted"), [(300, True), (-300, True), (301, False), (-301, False)]
)  # fmt: skip
def test_the_tolerance_bounds_both_ways(skew: int, accepted: bool) -> None:
    (key,) = parse_secrets(SECRET, "x")
    if accepted:
        check(headers(EXPECTED), (key,), now=STAMP + skew)
    else:
        with pytest.raises(Unauthorized, match="webhook-timestamp is"):
            check(headers(EXPECTED), (key,), now=STAMP + skew)


def test_headers_and_body_are_all_signed() -> None:
    (key,) = parse_secrets(SECRET, "x")
    for h, body in (
        (headers(EXPECTED, webhook_id="msg_other"), BODY),
        (headers(EXPECTED, stamp=STAMP + 1), BODY),
        (headers(EXPECTED), BODY + b" "),
    ):
        with pytest.raises(Unauthorized):
            check(h, (key,), body=body)
    with pytest.raises(Unauthorized, match="webhook-signature"):
        check({"webhook-id": MSG_ID, "webhook-timestamp": str(STAMP)}, (key,))


def test_secrets_must_be_whsec_base64_of_24_to_64_bytes() -> None:
    assert len(parse_secrets(f"{SECRET}, {SECRET}", "x")) == 2
    for bad in ("whsec_not base64!", "whsec_" + base64.b64encode(b"short").decode()):
        with pytest.raises(InvalidInput, match="SMITHERS_X"):
            parse_secrets(bad, "SMITHERS_X")
    config = WebhookConfig.from_env({"SMITHERS_WEBHOOK_BILLING_SECRETS": SECRET})
    assert config.secrets(Source.IDP) == () and len(config.secrets(Source.BILLING)) == 1
    assert SECRET.removeprefix("whsec_") not in repr(config)
    assert Scope.ADMIN not in config.scopes(Source.IDP)
    assert config.scopes(Source.BILLING) == {Scope.RUN_READ, Scope.RUN_WRITE, Scope.APPROVAL_READ}


def test_deliveries_normalize_to_one_change() -> None:
    grant = parse(
        Source.BILLING,
        {"type": "subscription.active", "data": {"grant_id": "sub_12345678", "subject": "acme",
                                                 "scopes": ["run:read"], "expires_at": 2e9, "card": "4242"}},
        ALL,
    )  # fmt: skip
    assert grant.change == RecordGrant(
        "sub_12345678", "acme", (Scope.RUN_READ,), GrantKind.AUTOMATION, 2e9, None, None, replaces=True
    )
    ended = parse(Source.BILLING, {"type": "subscription.ended", "data": {"subject": "acme"}}, ALL)
    assert ended.change == RevokeSubject("acme", None, own_only=True)
    assert parse(Source.IDP, {"type": "user.login"}, ALL).change == Ignore()
    with pytest.raises(Forbidden, match="'admin'"):
        parse(
            Source.IDP,
            {"type": "grant.created", "data": {"grant_id": "g_12345678", "subject": "a", "scopes": ["admin"],
                                               "expires_at": 2e9}},
            frozenset({Scope.RUN_READ}),
        )  # fmt: skip
    with pytest.raises(InvalidInput, match=r"data\.reason"):
        parse(Source.IDP, {"type": "subject.revoked", "data": {"subject": "a", "reason": "x" * 501}}, ALL)
