"""A programme's reporting identity in R4V's 5W (§16): given at creation or set later, corrected, audited."""

from __future__ import annotations

import uuid

from sqlalchemy import text

from tests.support import assert_problem, programme_body

IDENTITY = {
    "appealing_organisation": "Alianza Humanitaria",
    "implementing_partner": "Fundación Frontera Viva",
    "indicator": "Number of people receiving multipurpose cash assistance",
    "activity_name": "MPC frontera",
    "activity_description": "Monthly multipurpose cash on prepaid cards",
    "rmrp_activity": True,
}
NONE = dict.fromkeys(IDENTITY)


async def test_the_identity_is_given_at_creation_or_left_for_later(client, api_key_factory):
    officer = await api_key_factory("programme_officer")
    given = await client.post("/v1/programmes", json=programme_body(**IDENTITY), headers=officer)
    assert given.status_code == 201, given.text
    assert {k: given.json()[k] for k in IDENTITY} == IDENTITY
    spaced = programme_body(**IDENTITY | {"activity_name": "  MPC frontera  "}, name="Other")
    assert (await client.post("/v1/programmes", json=spaced, headers=officer)).json()["activity_name"] == "MPC frontera"
    later = (await client.post("/v1/programmes", json=programme_body(name="Later"), headers=officer)).json()
    assert {k: later[k] for k in IDENTITY} == NONE
    assert (await client.get(f"/v1/programmes/{given.json()['id']}", headers=officer)).json() == given.json()


async def test_patch_sets_and_corrects_it_and_is_audited(client, api_key_factory, session_factory):
    admin = await api_key_factory("admin")
    programme = (await client.post("/v1/programmes", json=programme_body(), headers=admin)).json()
    url = f"/v1/programmes/{programme['id']}"
    patched = await client.patch(url, json=IDENTITY, headers=await api_key_factory("programme_officer"))
    assert patched.status_code == 200, patched.text
    assert patched.json() == programme | IDENTITY
    corrected = await client.patch(url, json={"implementing_partner": None, "rmrp_activity": False}, headers=admin)
    assert corrected.json() == programme | IDENTITY | {"implementing_partner": None, "rmrp_activity": False}
    assert (await client.get(url, headers=admin)).json() == corrected.json()
    async with session_factory() as session:
        events = (
            await session.execute(
                text("SELECT before, after FROM audit_events WHERE action = 'programme.reporting_identity_changed'")
            )
        ).all()
    assert [(e.before["rmrp_activity"], e.after["rmrp_activity"]) for e in events] == [(None, True), (True, False)]
    assert events[1].before["implementing_partner"] == "Fundación Frontera Viva"
    assert events[1].after["implementing_partner"] is None


async def test_bad_changes_are_refused_and_nothing_else_changes(client, api_key_factory):
    admin = await api_key_factory("admin")
    programme = (await client.post("/v1/programmes", json=programme_body(**IDENTITY), headers=admin)).json()
    url = f"/v1/programmes/{programme['id']}"
    for body, field in (
        ({"indicator": None}, "indicator"),
        ({"rmrp_activity": None}, "rmrp_activity"),
        ({"appealing_organisation": "   "}, "appealing_organisation"),
        ({"activity_name": "x" * 201}, "activity_name"),
        ({"rmrp_activity": "perhaps"}, "rmrp_activity"),
        ({"name": "Renamed"}, "name"),
        ({"currency": "USD"}, "currency"),
    ):
        problem = assert_problem(await client.patch(url, json=body, headers=admin), 422)
        assert field in {e["field"] for e in problem["errors"]}, (body, problem)
    assert (await client.get(url, headers=admin)).json() == programme
    assert_problem(await client.patch(f"/v1/programmes/{uuid.uuid4()}", json=IDENTITY, headers=admin), 404)
    bad = programme_body(indicator="", rmrp_activity="sometimes")
    problem = assert_problem(await client.post("/v1/programmes", json=bad, headers=admin), 422)
    assert {"indicator", "rmrp_activity"} <= {e["field"] for e in problem["errors"]}
