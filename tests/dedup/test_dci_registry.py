"""Registrations checked against a partner's DCI registry (`cbi-service registry-sim` in its own process):
found by a document written differently or by name, reported `unavailable` (never "no match") when the
registry does not answer, and checked again once it does."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from cbi_service.app import create_app
from cbi_service.dedup.registries import (
    RECHECK_BACKOFF_CAP_SECONDS,
    RECHECK_BACKOFF_SECONDS,
    RECHECK_MAX_ATTEMPTS,
    recheck_registries,
    registries_for,
)
from cbi_service.dedup.tasks import RECHECK_JOB
from cbi_service.jobs.service import enqueue
from cbi_service.kit.settings import Settings
from tests.adapters.registries.dci_support import (
    PARTNER_CASELOAD,
    GatedRegistry,
    RecordingProxy,
    registry_sim,
    silent_registry,
    write_caseload,
)
from tests.beneficiaries.support import person_body
from tests.console.support import console_client, sign_in
from tests.support import assert_problem, free_port, run_jobs

INTERNAL_CHECKED = {"registry": "internal", "status": "checked"}

#: José Luis García López of the partner's caseload, whose document the partner typed "0079 845-321".
JOSE = person_body(
    given_names="José Luis", family_names="García López", date_of_birth="1990-05-01", sex="male",
    nationality="CO", documents=[{"type": "national_id", "number": "79.845.321", "issuing_country": "CO"}],
    phone=None, external_ref=None,
)  # fmt: skip
UNKNOWN = person_body(
    given_names="Carmen", family_names="Mora Silva", date_of_birth="1972-08-15", nationality="CO",
    documents=[{"type": "national_id", "number": "52.111.222", "issuing_country": "CO"}],
    phone=None, external_ref=None,
)  # fmt: skip


@pytest.fixture(scope="module")
def caseload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_caseload(tmp_path_factory.mktemp("partner") / "caseload.csv", PARTNER_CASELOAD)


@pytest.fixture(scope="module")
def partner(caseload: Path) -> Any:
    with registry_sim(caseload) as base_url:
        yield base_url


def with_registry(settings: Settings, base_url: str, **options: Any) -> Settings:
    return settings.model_copy(update={"registries": {"partner": {"adapter": "dci", "base_url": base_url, **options}}})


@contextlib.asynccontextmanager
async def service(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


async def waiting(session_factory: Any) -> list[tuple[uuid.UUID, str, int, bool]]:
    async with session_factory() as session:
        rows = await session.execute(
            text("SELECT beneficiary_id, registry_name, attempts, claimed_at IS NOT NULL FROM dedup_registry_rechecks")
        )
        return sorted(tuple(row) for row in rows)


async def queue(session_factory: Any) -> dict[str, tuple[int, bool, float]]:
    """Who waits for a re-check: person -> (attempts, claimed, seconds until due)."""
    async with session_factory() as session:
        rows = await session.execute(
            text(
                "SELECT beneficiary_id, attempts, claimed_at IS NOT NULL,"
                " EXTRACT(EPOCH FROM next_attempt_at - now())::float FROM dedup_registry_rechecks"
            )
        )
        return {str(row[0]): (row[1], row[2], row[3]) for row in rows}


async def all_due(session_factory: Any, **set_: int) -> None:
    """The time to ask again has come for everyone waiting (and their attempts, if given, are these)."""
    assignments = "".join(f", {column} = :{column}" for column in set_)
    async with session_factory.begin() as session:
        await session.execute(text(f"UPDATE dedup_registry_rechecks SET next_attempt_at = now(){assignments}"), set_)


async def run_recheck(session_factory: Any, settings: Settings) -> None:
    """The periodic re-check, as the worker runs it (due now)."""
    async with session_factory.begin() as session:
        await enqueue(session, RECHECK_JOB, {}, dedupe_key=f"periodic:{RECHECK_JOB}")
        await session.execute(text("UPDATE jobs SET run_at = now() WHERE kind = :kind"), {"kind": RECHECK_JOB})
    await run_jobs(session_factory, settings)


async def test_a_registration_finds_the_partners_record_by_a_document_written_differently(
    settings, api_key_factory, partner
):
    registrar = await api_key_factory("registrar")
    async with service(with_registry(settings, partner)) as client:
        checked = await client.post("/v1/dedup/check", json=JOSE, headers=registrar)
        refused = await client.post("/v1/beneficiaries", json=JOSE, headers=registrar)
        listed = await client.get("/v1/beneficiaries", headers=registrar)
    assert checked.status_code == 200, checked.text
    problem = assert_problem(refused, 409)
    for dedup in (checked.json(), problem["dedup"]):
        assert dedup["status"] == "duplicate"
        assert [(m["registry"], m["registry_ref"], m["matched_on"]) for m in dedup["matches"]] == [
            ("partner", "NRC-1001", ["document"])
        ]
        assert dedup["registries"] == [INTERNAL_CHECKED, {"registry": "partner", "status": "checked"}]
    assert listed.json()["items"] == [], "nothing was stored"


async def test_a_replayed_registration_asks_the_registries_nothing_again(settings, api_key_factory, partner):
    """A retried registration replays its first answer: the person's data is not sent to the partners a second
    time (nor does the retry wait on them)."""
    registrar = await api_key_factory("registrar")
    headers = registrar | {"Idempotency-Key": str(uuid.uuid4())}
    with RecordingProxy(partner) as proxy:
        async with service(with_registry(settings, proxy.url)) as client:
            first = await client.post("/v1/beneficiaries", json=UNKNOWN, headers=headers)
            asked = len(proxy.exchanges)
            again = await client.post("/v1/beneficiaries", json=UNKNOWN, headers=headers)
            other = await client.post("/v1/beneficiaries", json=JOSE, headers=headers)
    assert first.status_code == 201, first.text
    assert asked >= 1
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert_problem(other, 422)  # the key reused with another person: refused, and nobody was asked about them
    assert len(proxy.exchanges) == asked


async def test_a_registration_the_partner_knows_by_name_goes_to_adjudication(settings, api_key_factory, partner):
    registrar = await api_key_factory("registrar")
    yesica = person_body(
        given_names="Yesica", family_names="Ortiz Pena", date_of_birth="1988-04-12", documents=[], phone=None,
        external_ref=None,
    )  # fmt: skip
    async with service(with_registry(settings, partner)) as client:
        created = await client.post("/v1/beneficiaries", json=yesica, headers=registrar)
        unique = await client.post("/v1/beneficiaries", json=UNKNOWN, headers=registrar)
        adjudications = (await client.get("/v1/adjudications?status=open", headers=registrar)).json()["items"]
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["status"], body["dedup"]["status"]) == ("pending_adjudication", "possible_duplicate")
    assert [(m["registry"], m["registry_ref"]) for m in body["dedup"]["matches"]] == [("partner", "NRC-1003")]
    assert [a["beneficiary_id"] for a in adjudications] == [body["id"]]
    assert unique.json()["dedup"] == {
        "status": "unique",
        "matches": [],
        "registries": [INTERNAL_CHECKED, {"registry": "partner", "status": "checked"}],
    }


async def test_a_registry_that_never_answers_costs_its_timeout_and_shows_unavailable(
    settings, api_key_factory, session_factory
):
    registrar = await api_key_factory("registrar")
    with silent_registry() as url:
        async with service(with_registry(settings, url, timeout_seconds=1, retries=2)) as client:
            started = time.monotonic()
            response = await client.post("/v1/beneficiaries", json=UNKNOWN, headers=registrar)
            elapsed = time.monotonic() - started
    assert response.status_code == 201, response.text
    body = response.json()
    assert elapsed < 1.8, f"registration took {elapsed:.2f}s with a 1s registry timeout"
    assert body["status"] == "active"
    assert body["dedup"] == {
        "status": "unique",
        "matches": [],
        "registries": [INTERNAL_CHECKED, {"registry": "partner", "status": "unavailable"}],
    }
    assert await waiting(session_factory) == [(uuid.UUID(body["id"]), "partner", 0, False)]
    async with session_factory() as session:
        summary = (
            await session.execute(text("SELECT after FROM audit_events WHERE action = 'beneficiary.registered'"))
        ).scalar_one()
    assert summary["registries_unavailable"] == ["partner"]


async def test_people_checked_while_the_registry_was_down_are_checked_again_once_it_answers(
    settings, api_key_factory, session_factory, caseload
):
    port = free_port()
    settings = with_registry(settings, f"http://127.0.0.1:{port}", timeout_seconds=1, failure_threshold=100)
    registrar = await api_key_factory("registrar")
    async with service(settings) as client:
        jose = (await client.post("/v1/beneficiaries", json=JOSE, headers=registrar)).json()
        carmen = (await client.post("/v1/beneficiaries", json=UNKNOWN, headers=registrar)).json()
        assert [b["dedup"]["registries"][1]["status"] for b in (jose, carmen)] == ["unavailable", "unavailable"]
        assert (jose["status"], carmen["status"]) == ("active", "active")

        await run_recheck(session_factory, settings)  # still down: both keep waiting, one attempt each
        assert [(r[1], r[2], r[3]) for r in await waiting(session_factory)] == [("partner", 1, False)] * 2

        await all_due(session_factory)  # a minute later
        with registry_sim(caseload, port=port):
            await run_recheck(session_factory, settings)
        assert await waiting(session_factory) == []
        jose_now = (await client.get(f"/v1/beneficiaries/{jose['id']}", headers=registrar)).json()
        carmen_now = (await client.get(f"/v1/beneficiaries/{carmen['id']}", headers=registrar)).json()
        (adjudication,) = (await client.get("/v1/adjudications?status=open", headers=registrar)).json()["items"]
    assert (jose_now["status"], carmen_now["status"]) == ("pending_adjudication", "active")
    assert adjudication["beneficiary_id"] == jose["id"]
    assert [(m["registry"], m["registry_ref"], m["matched_on"]) for m in adjudication["matches"]] == [
        ("partner", "NRC-1001", ["document"])
    ]
    async with session_factory() as session:
        actions = (
            await session.execute(
                text(
                    "SELECT action FROM audit_events WHERE resource_id = :id"
                    " AND action <> 'beneficiary.personal_data_viewed' ORDER BY occurred_at, id"
                ),
                {"id": jose["id"]},
            )
        ).scalars()
        assert list(actions) == ["beneficiary.registered", "adjudication.opened", "beneficiary.registry_match"]


async def test_a_correction_once_the_registry_answers_needs_no_recheck(
    settings, api_key_factory, session_factory, caseload
):
    port = free_port()
    settings = with_registry(settings, f"http://127.0.0.1:{port}", timeout_seconds=1, failure_threshold=100)
    registrar = await api_key_factory("registrar")
    async with service(settings) as client:
        carmen = (await client.post("/v1/beneficiaries", json=UNKNOWN, headers=registrar)).json()
        assert len(await waiting(session_factory)) == 1
        with registry_sim(caseload, port=port):
            corrected = await client.patch(
                f"/v1/beneficiaries/{carmen['id']}", json={"household_size": 5}, headers=registrar
            )
        assert corrected.json()["dedup"]["registries"][1] == {"registry": "partner", "status": "checked"}
        assert await waiting(session_factory) == []
        again = await client.patch(f"/v1/beneficiaries/{carmen['id']}", json={"household_size": 6}, headers=registrar)
    assert again.json()["dedup"]["registries"][1] == {"registry": "partner", "status": "unavailable"}
    assert [(r[1], r[2]) for r in await waiting(session_factory)] == [("partner", 0)]


async def test_an_import_while_the_registry_is_down_reports_it_per_row_and_is_checked_again(
    settings, api_key_factory, session_factory, caseload
):
    port = free_port()
    settings = with_registry(
        settings, f"http://127.0.0.1:{port}", timeout_seconds=1, failure_threshold=2, recovery_seconds=1
    )
    registrar = await api_key_factory("registrar")
    rows = [_row(JOSE, "ROW-1"), _row(UNKNOWN, "ROW-2")]
    async with service(settings) as client:
        accepted = await client.post(
            "/v1/beneficiaries/imports", files={"file": ("people.csv", _csv(rows), "text/csv")}, headers=registrar
        )
        await run_jobs(session_factory, settings)
        report = (await client.get(f"/v1/beneficiaries/imports/{accepted.json()['id']}", headers=registrar)).json()
        assert report["status"] == "completed"
        assert report["counts"] == {"created": 2}
        assert [r["registries_unavailable"] for r in report["rows"]["items"]] == [["partner"], ["partner"]]
        assert len(await waiting(session_factory)) == 2
        with registry_sim(caseload, port=port):
            await asyncio.sleep(1.1)  # the breaker the import's failures opened lets a call through after 1 s
            await run_recheck(session_factory, settings)
        first = report["rows"]["items"][0]["beneficiary_id"]
        assert (await client.get(f"/v1/beneficiaries/{first}", headers=registrar)).json()["status"] == (
            "pending_adjudication"
        )
    assert await waiting(session_factory) == []


#: People the partner's registry refuses to be asked about, whatever the day (their surname is in every
#: search it is sent about them): a batch of them, then someone it answers for.
REFUSED = [
    person_body(
        given_names=given, family_names="Rechazo Ruiz", date_of_birth=born, documents=[], phone=None,
        external_ref=None,
    )
    for given, born in (("Ana", "1961-01-11"), ("Beatriz", "1974-02-22"), ("Camila", "1983-03-30"))
]  # fmt: skip


async def register_while_down(settings: Settings, api_key_factory: Any, bodies: list[dict[str, Any]]) -> list[str]:
    """These people registered while the partner's registry was down: each waits for a re-check."""
    down = with_registry(settings, f"http://127.0.0.1:{free_port()}", timeout_seconds=1, failure_threshold=100)
    registrar = await api_key_factory("registrar")
    async with service(down) as client:
        ids = [(await client.post("/v1/beneficiaries", json=body, headers=registrar)).json()["id"] for body in bodies]
    return ids


async def test_people_the_registry_keeps_refusing_do_not_keep_the_others_from_being_checked_again(
    settings, api_key_factory, session_factory, partner
):
    *refused, carmen = await register_while_down(settings, api_key_factory, [*REFUSED, UNKNOWN])
    assert len(await waiting(session_factory)) == 4
    with GatedRegistry(partner, refused=("rechazo",)) as gate:
        registries = registries_for(with_registry(settings, gate.url, failure_threshold=100).registries)
        for _ in range(2):  # two rounds of the periodic job, each claiming a batch the size of the refused
            await recheck_registries(session_factory, registries, batch=len(REFUSED))
        left = await queue(session_factory)
        assert carmen not in left, "the person queued behind a batch the registry refuses was never asked about"
        assert gate.refusals == len(REFUSED), "each refused person was asked once"
        # Asked once, unclaimed, due again a minute after that attempt.
        assert {person: row[:2] for person, row in left.items()} == dict.fromkeys(refused, (1, False))
        assert all(50 < row[2] <= RECHECK_BACKOFF_SECONDS for row in left.values()), left

        await all_due(session_factory)
        await recheck_registries(session_factory, registries, batch=len(REFUSED))
        left = await queue(session_factory)
        assert {person: row[:2] for person, row in left.items()} == dict.fromkeys(refused, (2, False))
        assert all(110 < row[2] <= 2 * RECHECK_BACKOFF_SECONDS for row in left.values()), "twice as long"

        await all_due(session_factory, attempts=RECHECK_MAX_ATTEMPTS - 2)
        await recheck_registries(session_factory, registries, batch=len(REFUSED))
        left = await queue(session_factory)
        assert {row[0] for row in left.values()} == {RECHECK_MAX_ATTEMPTS - 1}
        assert all(RECHECK_BACKOFF_CAP_SECONDS - 10 < row[2] <= RECHECK_BACKOFF_CAP_SECONDS for row in left.values()), (
            "never further off than the cap"
        )
    assert gate.refusals == 3 * len(REFUSED)
    async with session_factory() as session:
        status = (
            await session.execute(text("SELECT status FROM beneficiaries WHERE id = :id"), {"id": carmen})
        ).scalar_one()
    assert status == "active"


async def test_after_the_last_attempt_a_person_the_registry_never_answered_for_goes_to_adjudication(
    app, settings, api_key_factory, session_factory, partner
):
    refused = await register_while_down(settings, api_key_factory, REFUSED[:2])
    adjudicator = await api_key_factory("registrar")
    # One of them already waits for an adjudicator: the registry's silence is added to what they will see.
    async with session_factory.begin() as session:
        await session.execute(
            text("INSERT INTO adjudications (id, beneficiary_id, matches, status) VALUES (:id, :person, :m, 'open')"),
            {"id": uuid.uuid4(), "person": refused[1], "m": '[{"registry": "other", "registry_ref": "X-1",'
             ' "score": 0.7, "matched_on": ["date_of_birth"]}]'},
        )  # fmt: skip
    await all_due(session_factory, attempts=RECHECK_MAX_ATTEMPTS - 1)
    with GatedRegistry(partner, refused=("rechazo",)) as gate:
        registries = registries_for(with_registry(settings, gate.url, failure_threshold=100).registries)
        done = await recheck_registries(session_factory, registries)
    assert (done.asked, done.answered, done.referred) == (2, 0, 2)
    assert await queue(session_factory) == {}, "no longer asked about"
    async with service(settings) as client:
        items = (await client.get("/v1/adjudications?status=open", headers=adjudicator)).json()["items"]
        people = [(await client.get(f"/v1/beneficiaries/{p}", headers=adjudicator)).json() for p in refused]
    unanswered = {"registry": "partner", "registry_ref": None, "beneficiary_id": None, "score": 0.0,
                  "matched_on": [], "match_weight": None, "explanation": [],
                  "unanswered_attempts": RECHECK_MAX_ATTEMPTS}  # fmt: skip
    by_person = {a["beneficiary_id"]: a["matches"] for a in items}
    assert by_person[refused[0]] == [unanswered]
    assert [m["registry"] for m in by_person[refused[1]]] == ["other", "partner"]
    assert by_person[refused[1]][1] == unanswered
    assert [p["status"] for p in people] == ["active", "active"], "a registry that fails holds nobody's assistance"
    async with console_client(app) as browser:
        await sign_in(browser, adjudicator)
        page = await browser.get(
            f"/console/adjudications/{next(a['id'] for a in items if a['beneficiary_id'] == refused[0])}"
        )
    assert page.status_code == 200
    assert f"This registry never answered about this person (asked {RECHECK_MAX_ATTEMPTS} times)" in page.text
    async with session_factory() as session:
        events = (
            await session.execute(
                text(
                    "SELECT resource_id, action, after FROM audit_events"
                    " WHERE action LIKE 'adjudication.%' ORDER BY resource_id"
                )
            )
        ).all()
    assert sorted((str(e[0]), e[1], e[2]["registry"], e[2]["unanswered_attempts"]) for e in events) == sorted(
        [
            (refused[0], "adjudication.opened", "partner", RECHECK_MAX_ATTEMPTS),
            (refused[1], "adjudication.matches_added", "partner", RECHECK_MAX_ATTEMPTS),
        ]
    )


async def test_a_correction_holds_no_lock_on_the_person_while_a_slow_registry_is_asked(
    settings, api_key_factory, session_factory, partner
):
    registrar = await api_key_factory("registrar")
    with GatedRegistry(partner, hold=True) as slow:
        async with service(with_registry(settings, slow.url, timeout_seconds=20, failure_threshold=100)) as client:
            slow.release.set()
            carmen = (await client.post("/v1/beneficiaries", json=UNKNOWN, headers=registrar)).json()
            slow.release.clear()
            slow.asked.clear()
            correcting = asyncio.create_task(
                client.patch(f"/v1/beneficiaries/{carmen['id']}", json={"household_size": 5}, headers=registrar)
            )
            try:
                assert await asyncio.to_thread(slow.asked.wait, 10), "the correction asks the registry"
                async with session_factory.begin() as session:
                    free = await session.execute(
                        text("SELECT id FROM beneficiaries WHERE id = :id FOR UPDATE SKIP LOCKED"), {"id": carmen["id"]}
                    )
                    assert free.scalar_one_or_none() == uuid.UUID(carmen["id"]), (
                        "the person's row is locked while the registry is being asked"
                    )
            finally:
                slow.release.set()
            corrected = await correcting
    assert corrected.status_code == 200, corrected.text
    assert corrected.json()["household_size"] == 5
    assert corrected.json()["dedup"]["registries"][1] == {"registry": "partner", "status": "checked"}


async def test_what_changed_while_the_registry_was_asked_is_not_overwritten(
    settings, api_key_factory, session_factory, partner
):
    registrar = await api_key_factory("registrar")
    with GatedRegistry(partner, hold=True) as slow:
        async with service(with_registry(settings, slow.url, timeout_seconds=20, failure_threshold=100)) as client:
            slow.release.set()
            people = [(await client.post("/v1/beneficiaries", json=b, headers=registrar)).json() for b in REFUSED[:2]]
            slow.release.clear()

            async def meanwhile(person: dict[str, Any], first: dict[str, Any], then: Any) -> list[Any]:
                """`first` sent while the registry is slow, `then()` done meanwhile, `first`'s answer last."""
                slow.asked.clear()
                url = f"/v1/beneficiaries/{person['id']}"
                correcting = asyncio.create_task(client.patch(url, json=first, headers=registrar))
                try:
                    assert await asyncio.to_thread(slow.asked.wait, 10)
                    done = await then(url)
                finally:
                    slow.release.set()
                answer = await correcting
                slow.release.clear()
                return [done, answer]

            async def deactivate(url: str) -> httpx.Response:
                return await client.post(f"{url}/deactivate", headers=registrar)

            async def household(url: str) -> None:
                """Another writer (its own registry check long done) changes what no registry is asked about."""
                async with session_factory.begin() as session:
                    await session.execute(
                        text("UPDATE beneficiaries SET household_size = 7, updated_at = now() WHERE id = :id"),
                        {"id": url.rsplit("/", 1)[1]},
                    )

            # Deactivated meanwhile: the correction does not bring the person back.
            deactivated, refused = await meanwhile(people[0], {"given_names": "Ana Lucía"}, deactivate)
            # A household size changed meanwhile: the correction is applied over it.
            _, renamed = await meanwhile(people[1], {"given_names": "Beatriz Elena"}, household)

            async def renamed_too(url: str) -> httpx.Response:
                """A correction of another name meanwhile, waiting for the registry too: released together."""
                searched = slow.searches
                other = asyncio.create_task(client.patch(url, json={"family_names": "Ruiz Rechazo"}, headers=registrar))
                while slow.searches == searched:
                    await asyncio.sleep(0.01)
                slow.release.set()
                return await other

            # Two corrections of the names asked about at once: the one locking second was checked on names that
            # are no longer the person's, and is refused; the other stands.
            racing = await meanwhile(people[1], {"given_names": "Beatriz"}, renamed_too)
            first = (await client.get(f"/v1/beneficiaries/{people[0]['id']}", headers=registrar)).json()
            second = (await client.get(f"/v1/beneficiaries/{people[1]['id']}", headers=registrar)).json()
    assert deactivated.status_code == 200, deactivated.text
    assert_problem(refused, 409)
    assert (first["status"], first["given_names"]) == ("inactive", "Ana")
    assert renamed.status_code == 200, renamed.text
    assert sorted(r.status_code for r in racing) == [200, 409], [r.text for r in racing]
    kept = next(r.json() for r in racing if r.status_code == 200)
    assert (second["given_names"], second["family_names"]) == (kept["given_names"], kept["family_names"])
    assert second["household_size"] == 7


def _row(body: dict[str, Any], ref: str) -> dict[str, str]:
    (document,) = body["documents"]
    return {
        "given_names": body["given_names"], "family_names": body["family_names"],
        "date_of_birth": body["date_of_birth"], "sex": body["sex"], "nationality": body["nationality"],
        "document_type": document["type"], "document_number": document["number"],
        "document_country": document["issuing_country"], "phone": "", "country": "CO", "admin1": "Norte de Santander",
        "admin2": "Cúcuta", "household_size": "3", "external_ref": ref, "consent_given": "true",
        "consent_date": "2026-11-01", "consent_purpose": "multipurpose cash assistance",
    }  # fmt: skip


def _csv(rows: list[dict[str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


@pytest.mark.parametrize("route", ["register", "check", "correct"])
async def test_no_database_connection_is_held_while_a_slow_registry_is_asked(settings, api_key_factory, partner, route):
    """A registry that takes its time must not hold one of the pool's connections per request waiting on it:
    a pool's worth of registrations at a slow partner would leave every other request of the process none."""
    registrar = await api_key_factory("registrar")
    with GatedRegistry(partner, hold=True) as slow:
        app = create_app(with_registry(settings, slow.url, timeout_seconds=20, failure_threshold=100))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                slow.release.set()
                carmen = (await client.post("/v1/beneficiaries", json=UNKNOWN, headers=registrar)).json()
                slow.release.clear()
                slow.asked.clear()
                sent = {
                    "register": lambda: client.post("/v1/beneficiaries", json=JOSE, headers=registrar),
                    "check": lambda: client.post("/v1/dedup/check", json=JOSE, headers=registrar),
                    "correct": lambda: client.patch(
                        f"/v1/beneficiaries/{carmen['id']}", json={"household_size": 5}, headers=registrar
                    ),
                }[route]
                answering = asyncio.create_task(sent())
                try:
                    assert await asyncio.to_thread(slow.asked.wait, 10), "the request asks the registry"
                    assert app.state.engine.pool.checkedout() == 0, "a connection is held while the registry is asked"
                finally:
                    slow.release.set()
                answered = await answering
    assert answered.status_code in (200, 201, 409), answered.text


async def test_an_import_holds_no_transaction_open_while_a_slow_registry_is_asked(
    settings, api_key_factory, session_factory, partner
):
    """An import's chunk asks the registries before its transaction begins: a slow partner leaves no
    transaction idle (holding the import's row lock, a pooled connection and back VACUUM) while it answers."""
    registrar = await api_key_factory("registrar")
    with GatedRegistry(partner, hold=True) as slow:
        settings = with_registry(settings, slow.url, timeout_seconds=20, failure_threshold=100)
        rows = [_row(JOSE, "ROW-1"), _row(UNKNOWN, "ROW-2")]
        async with service(settings) as client:
            accepted = await client.post(
                "/v1/beneficiaries/imports", files={"file": ("people.csv", _csv(rows), "text/csv")}, headers=registrar
            )
            assert accepted.status_code == 202, accepted.text
            importing = asyncio.create_task(run_jobs(session_factory, settings))
            try:
                assert await asyncio.to_thread(slow.asked.wait, 20), "the import asks the registry"
                async with session_factory() as session:
                    idle = (
                        await session.execute(
                            text(
                                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                " AND state LIKE 'idle in transaction%'"
                            )
                        )
                    ).scalar_one()
                assert idle == 0, "a transaction is held open while the registry is asked"
            finally:
                slow.release.set()
            await importing
            report = (await client.get(f"/v1/beneficiaries/imports/{accepted.json()['id']}", headers=registrar)).json()
    assert report["status"] == "completed", report
    assert report["counts"] == {"duplicate": 1, "created": 1}
