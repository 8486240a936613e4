"""Every batch and entitlement route × every role: 401 without a key, 403 without the role, else through."""

from __future__ import annotations

import uuid

from cbi_service.auth.roles import Role
from tests.helpers import assert_problem

MISSING = str(uuid.uuid4())
CREATE = {
    "programme_id": MISSING,
    "name": "N",
    "cycle": "2026-11",
    "amount": {"amount": "1000.00", "currency": "COP"},
}
ALL = set(Role)
OFFICER = {Role.programme_officer}
ROUTES = [
    ("POST", "/v1/payment-batches", CREATE, OFFICER),
    ("GET", "/v1/payment-batches", None, ALL),
    ("GET", f"/v1/payment-batches/{MISSING}", None, ALL),
    ("POST", f"/v1/payment-batches/{MISSING}/submit", None, OFFICER),
    ("POST", f"/v1/payment-batches/{MISSING}/approvals", {"decision": "approve"}, {Role.approver}),
    ("POST", f"/v1/payment-batches/{MISSING}/release", None, {Role.finance}),
    ("POST", f"/v1/payment-batches/{MISSING}/cancel", None, OFFICER),
    ("POST", f"/v1/payment-batches/{MISSING}/follow-up", None, OFFICER),
    ("GET", "/v1/entitlements", None, ALL),
    ("GET", f"/v1/entitlements/{MISSING}", None, ALL),
    ("POST", f"/v1/entitlements/{MISSING}/retry", None, {Role.finance, Role.programme_officer}),
    ("POST", f"/v1/entitlements/{MISSING}/cancel", None, {Role.finance, Role.programme_officer}),
]


async def test_every_route_by_every_role(client, api_key_factory):
    """One database for the whole matrix: a route × role pair needs no state of its own."""
    keys = {role: await api_key_factory(role.value) for role in Role}
    for method, path, body, allowed in ROUTES:
        headers = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
        assert_problem(await client.request(method, path, json=body, headers=headers), 401)
        for role, key in keys.items():
            response = await client.request(method, path, json=body, headers={**key, **headers})
            if role in allowed:
                assert response.status_code in (200, 404), (method, path, role, response.text)
            else:
                assert response.status_code == 403, (method, path, role, response.text)
                assert_problem(response, 403)
