"""Console pages over HTTP (no browser): the buttons go through the API's own services, so maker-checker,
segregation of duties, masking and the viewing audit hold exactly as in the API."""

from __future__ import annotations

import csv
import io
import re
import uuid

from sqlalchemy import select

from cbi_service.audit.models import AuditEvent
from cbi_service.beneficiaries.imports import TEMPLATE_COLUMNS
from tests.beneficiaries.support import person_body
from tests.console.support import console_client, sign_in
from tests.issuance.support import fund, seed_beneficiaries
from tests.support import make_actors, make_programme, run_jobs


async def _pending_batch(client, actors, session_factory, *, officer=None) -> tuple[dict, dict]:
    officer = officer or actors.officer
    programme = await make_programme(client, actors)
    await fund(client, actors, programme["id"], "1000000.00")
    await seed_beneficiaries(session_factory, programme["id"], 3)
    body = {"programme_id": programme["id"], "name": "Diciembre", "cycle": "2026-12",
            "amount": {"amount": "150000.00", "currency": "COP"}}  # fmt: skip
    batch = (await client.post("/v1/payment-batches", json=body, headers=officer)).json()
    submitted = await client.post(f"/v1/payment-batches/{batch['id']}/submit", headers=officer)
    assert submitted.status_code == 200, submitted.text
    return programme, submitted.json()


async def test_approvers_approve_finance_releases_and_the_api_shows_it(app, client, api_key_factory, session_factory):
    actors = await make_actors(api_key_factory)
    _, batch = await _pending_batch(client, actors, session_factory)
    url = f"/console/batches/{batch['id']}"
    async with console_client(app) as first, console_client(app) as second, console_client(app) as finance:
        first_token = await sign_in(first, actors.approver1)
        queue = await first.get("/console/batches")
        assert "Diciembre" in queue.text
        page = await first.get(url)
        assert 'id="approve"' in page.text
        assert "450,000.00 COP" in page.text  # the total, as English writes it
        token = await sign_in(second, actors.approver2)
        approved = await first.post(
            f"{url}/approvals", data={"csrf_token": first_token, "decision": "approve", "comment": "Lista revisada"}
        )
        assert approved.status_code == 303
        assert approved.headers["location"] == f"{url}?done=approve"
        again = await first.get(url)
        assert 'id="approve"' not in again.text  # decided already: no second button
        assert "You have already decided on this batch." in again.text
        second_page = await second.get(url)
        assert 'id="approve"' in second_page.text
        assert (
            await second.post(f"{url}/approvals", data={"csrf_token": token, "decision": "approve"})
        ).status_code == 303

        api = (await client.get(f"/v1/payment-batches/{batch['id']}", headers=actors.auditor)).json()
        assert api["status"] == "approved"
        assert [(a["approver_name"], a["decision"], a["comment"]) for a in api["approvals"]] == [
            ("approver-1", "approve", "Lista revisada"),
            ("approver-2", "approve", None),
        ]
        finance_token = await sign_in(finance, actors.finance)
        assert 'id="release"' in (await finance.get(url)).text
        released = await finance.post(f"{url}/release", data={"csrf_token": finance_token})
        assert released.status_code == 303
        processing = await finance.get(released.headers["location"])
        assert '<meta http-equiv="refresh" content="5">' in processing.text
        assert "0 of 3 payments settled" in processing.text
    api = (await client.get(f"/v1/payment-batches/{batch['id']}", headers=actors.auditor)).json()
    assert api["status"] == "processing"


async def test_the_creator_gets_no_button_and_a_forged_approval_is_refused(
    app, client, api_key_factory, session_factory
):
    actors = await make_actors(api_key_factory)
    maker = await api_key_factory("programme_officer", "approver", name="officer-and-approver")
    _, batch = await _pending_batch(client, actors, session_factory, officer=maker)
    async with console_client(app) as browser:
        token = await sign_in(browser, maker)
        page = await browser.get(f"/console/batches/{batch['id']}")
        assert 'id="approve"' not in page.text
        assert 'id="reject"' not in page.text
        assert "You created this batch: someone else must approve it." in page.text
        forged = await browser.post(
            f"/console/batches/{batch['id']}/approvals", data={"csrf_token": token, "decision": "approve"}
        )
        assert forged.status_code == 403
        assert "cannot approve or reject it" in forged.text
        release = await browser.post(f"/console/batches/{batch['id']}/release", data={"csrf_token": token})
        assert release.status_code == 403  # not finance: the role check, as in the API
        assert "finance" in release.text
    api = (await client.get(f"/v1/payment-batches/{batch['id']}", headers=actors.auditor)).json()
    assert api["status"] == "pending_approval"
    assert api["approvals"] == []
    async with session_factory() as session:
        assert not list(await session.scalars(select(AuditEvent).where(AuditEvent.action == "payment_batch.approve")))


async def test_a_bad_decision_or_comment_is_a_422_page_and_changes_nothing(
    app, client, api_key_factory, session_factory
):
    actors = await make_actors(api_key_factory)
    _, batch = await _pending_batch(client, actors, session_factory)
    async with console_client(app) as browser:
        token = await sign_in(browser, actors.approver1)
        url = f"/console/batches/{batch['id']}/approvals"
        bad = await browser.post(url, data={"csrf_token": token, "decision": "maybe"})
        assert bad.status_code == 422
        assert "decision" in bad.text
        long = await browser.post(url, data={"csrf_token": token, "decision": "approve", "comment": "x" * 2001})
        assert long.status_code == 422
        assert "comment" in long.text
        nul = await browser.post(url, data={"csrf_token": token, "decision": "approve", "comment": "a\x00b"})
        assert nul.status_code == 422
        assert (await browser.get("/console/batches/not-a-uuid")).status_code == 422
        assert (await browser.get(f"/console/batches/{uuid.uuid4()}")).status_code == 404
    api = (await client.get(f"/v1/payment-batches/{batch['id']}", headers=actors.auditor)).json()
    assert api["approvals"] == []


async def _possible_duplicate(client, registrar) -> tuple[dict, dict]:
    original = (await client.post("/v1/beneficiaries", json=person_body(), headers=registrar)).json()
    maybe = person_body(date_of_birth="1990-03-17", documents=[], phone=None, external_ref=None)
    created = (await client.post("/v1/beneficiaries", json=maybe, headers=registrar)).json()
    assert created["dedup"]["status"] == "possible_duplicate", created
    return original, created


async def test_side_by_side_masks_by_role_audits_full_views_and_decides(app, client, api_key_factory, session_factory):
    registrar = await api_key_factory("registrar", name="registrar-who-entered")
    reviewer = await api_key_factory("registrar", name="registrar-who-reviews")
    auditor = await api_key_factory("auditor", name="auditor")
    original, created = await _possible_duplicate(client, registrar)
    adjudication = (await client.get("/v1/adjudications?status=open", headers=reviewer)).json()["items"][0]
    url = f"/console/adjudications/{adjudication['id']}"
    async with console_client(app) as looking, console_client(app) as entering, console_client(app) as deciding:
        await sign_in(looking, auditor)
        masked = await looking.get(url)
        assert masked.status_code == 200
        assert "M. J." in masked.text
        assert "R. d. l. C." in masked.text
        assert "María José" not in masked.text
        assert "1990-03-07" not in masked.text
        assert "*******78" in masked.text or "*********78" in masked.text  # the document, but its last two
        assert 'id="duplicate"' not in masked.text

        token = await sign_in(entering, registrar)
        own = await entering.get(url)
        assert "María José" in own.text
        assert 'id="duplicate"' not in own.text
        forged = await entering.post(f"{url}/decision", data={"csrf_token": token, "decision": "duplicate"})
        assert forged.status_code == 403

        token = await sign_in(deciding, reviewer)
        full = await deciding.get(url)
        assert "María José" in full.text
        assert "1990-03-07" in full.text
        assert "1990-03-17" in full.text
        assert 'id="duplicate"' in full.text
        decided = await deciding.post(
            f"{url}/decision", data={"csrf_token": token, "decision": "duplicate", "note": "misma"}
        )
        assert decided.status_code == 303
    record = (await client.get(f"/v1/beneficiaries/{created['id']}", headers=reviewer)).json()
    assert record["status"] == "duplicate"
    assert record["duplicate_of"] == original["id"]
    async with session_factory() as session:
        views = list(
            await session.scalars(select(AuditEvent).where(AuditEvent.action == "beneficiary.personal_data_viewed"))
        )
    console_views = [v for v in views if v.after["route"] == "GET /console/adjudications/{adjudication_id}"]
    assert [v.actor_name for v in console_views] == ["registrar-who-entered", "registrar-who-reviews"]
    assert set(console_views[0].after["beneficiary_ids"]) == {original["id"], created["id"]}


def _csv(rows: list[dict[str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=TEMPLATE_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


async def test_an_import_shows_its_progress_then_its_row_errors(app, api_key_factory, session_factory, settings):
    registrar = await api_key_factory("registrar")
    good = {"given_names": "Ana Lucía", "family_names": "Pérez Gómez", "date_of_birth": "1985-06-20", "sex": "female",
            "nationality": "VE", "document_type": "national_id", "document_number": "V-9.876.543",
            "document_country": "VE", "country": "CO", "admin1": "Arauca", "household_size": "3",
            "consent_given": "sí", "consent_date": "01/11/2026", "consent_purpose": "cash for rent"}  # fmt: skip
    bad = good | {"document_number": "V-1.111.111", "sex": "", "household_size": "zero"}
    async with console_client(app) as browser:
        token = await sign_in(browser, registrar)
        assert 'type="file"' in (await browser.get("/console/imports")).text
        missing = await browser.post("/console/imports", data={"csrf_token": token})
        assert missing.status_code == 422
        response = await browser.post(
            "/console/imports",
            data={"csrf_token": token},
            files={"file": ("people.csv", _csv([good, bad]), "text/csv")},
        )
        assert response.status_code == 303, response.text
        page = await browser.get(response.headers["location"])
        assert "Queued" in page.text
        assert 'http-equiv="refresh"' in page.text
        assert (await browser.get(f"{response.headers['location']}/errors.csv")).status_code == 409
        await run_jobs(session_factory, settings)
        done = await browser.get(response.headers["location"])
        assert "Completed" in done.text
        assert 'http-equiv="refresh"' not in done.text
        assert "2 of 2 rows done" in done.text
        errors = re.findall(r'<td class="num">3</td><td><code>([a-z_]+)</code>', done.text)
        assert sorted(errors) == ["household_size", "sex"]
        assert "zero" not in done.text  # errors never quote the file's values
        download = await browser.get(f"{response.headers['location']}/errors.csv")
        assert download.status_code == 200
        assert download.headers["content-type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(download.text)))
        assert rows[0] == ["row_number", "field", "message"]
        assert sorted((row, field) for row, field, _ in rows[1:]) == [("3", "household_size"), ("3", "sex")]
        assert "people.csv" in (await browser.get("/console/imports")).text


async def test_ledger_verify_checks_an_uploaded_export(app, client, api_key_factory, session_factory):
    actors = await make_actors(api_key_factory)
    programme = await make_programme(client, actors)
    await fund(client, actors, programme["id"], "1000000.00")
    export = await client.get("/v1/ledger/export", params={"format": "csv"}, headers=actors.auditor)
    assert export.status_code == 200
    async with console_client(app) as browser:
        token = await sign_in(browser, actors.auditor)
        ok = await browser.post(
            "/console/ledger/verify", data={"csrf_token": token}, files={"file": ("ledger.csv", export.content)}
        )
        assert ok.status_code == 200
        assert 'id="verify-ok"' in ok.text
        tampered = export.content.replace(b"1000000.00", b"1000001.00", 1)
        assert tampered != export.content
        failed = await browser.post(
            "/console/ledger/verify", data={"csrf_token": token}, files={"file": ("ledger.csv", tampered)}
        )
        assert failed.status_code == 200
        assert 'id="verify-failed"' in failed.text
        assert "line " in failed.text
        junk = await browser.post(
            "/console/ledger/verify", data={"csrf_token": token}, files={"file": ("x.csv", b"a,b\n1,2\n")}
        )
        assert junk.status_code == 422
        assert "columns missing" in junk.text


async def test_auditor_pages_show_balances_trial_balance_people_reached_and_the_trail(app, client, api_key_factory):
    actors = await make_actors(api_key_factory)
    programme = await make_programme(client, actors)
    await fund(client, actors, programme["id"], "1000000.00")
    async with console_client(app) as browser:
        await sign_in(browser, actors.auditor)
        balances = await browser.get("/console/programmes")
        assert programme["name"] in balances.text
        assert "1,000,000.00 COP" in balances.text
        assert 'class="part part-available"' in balances.text  # the stacked bar, drawn on the server
        trial = await browser.get("/console/ledger/trial-balance", params={"as_of": "2026-01-01"})
        assert trial.status_code == 200
        assert "Debits equal credits" in trial.text
        reached = await browser.get(
            "/console/reports/people-reached", params={"from": "2026-01-01", "to": "2026-12-31"}
        )
        assert reached.status_code == 200
        assert "0 people reached" in reached.text
        backwards = await browser.get(
            "/console/reports/people-reached", params={"from": "2026-12-31", "to": "2026-01-01"}
        )
        assert backwards.status_code == 422
        trail = await browser.get("/console/audit-events", params={"action": "programme.funded"})
        assert trail.status_code == 200
        assert "programme.funded" in trail.text
        assert "programme.created" not in trail.text
        assert (await browser.get("/console/audit-events", params={"resource_id": "a\x00"})).status_code == 422
        spanish = await browser.get("/console/programmes", headers={"Accept-Language": "es"})
        assert "Saldos de los programas" in spanish.text
        assert "1.000.000,00 COP" in spanish.text


async def test_a_form_over_its_limit_is_a_413_page_and_uploads_have_the_upload_limit(app, api_key_factory):
    async with console_client(app) as browser:
        token = await sign_in(browser, await api_key_factory("approver"))
        big = await browser.post(
            f"/console/batches/{uuid.uuid4()}/approvals", data={"csrf_token": token, "comment": "x" * (2 << 20)}
        )
        assert big.status_code == 413
        assert big.headers["content-type"].startswith("text/html")
    async with console_client(app) as browser:
        token = await sign_in(browser, await api_key_factory("auditor"))
        export = b"x" * (2 << 20)  # past the form limit, well within the upload limit: read, then refused as junk
        junk = await browser.post(
            "/console/ledger/verify", data={"csrf_token": token}, files={"file": ("x.csv", export)}
        )
        assert junk.status_code == 422


async def test_a_refused_last_approval_leaves_nothing_behind(app, client, api_key_factory, session_factory):
    """Two batches pass submit against one budget; the second's last approval finds the money reserved by the
    first and is refused (409): the console's error page must not keep the approval or its audit event."""
    actors = await make_actors(api_key_factory)
    programme = await make_programme(client, actors)
    await fund(client, actors, programme["id"], "600000.00")
    await seed_beneficiaries(session_factory, programme["id"], 3)
    batches = []
    for cycle in ("2026-11", "2026-12"):
        body = {"programme_id": programme["id"], "name": cycle, "cycle": cycle,
                "amount": {"amount": "150000.00", "currency": "COP"}}  # fmt: skip
        batch = (await client.post("/v1/payment-batches", json=body, headers=actors.officer)).json()
        submitted = await client.post(f"/v1/payment-batches/{batch['id']}/submit", headers=actors.officer)
        assert submitted.status_code == 200, submitted.text
        batches.append(batch["id"])
    first, second = batches
    for approver in (actors.approver1, actors.approver2):
        decided = await client.post(
            f"/v1/payment-batches/{first}/approvals", json={"decision": "approve"}, headers=approver
        )
        assert decided.status_code == 200, decided.text
    assert (
        await client.post(
            f"/v1/payment-batches/{second}/approvals", json={"decision": "approve"}, headers=actors.approver1
        )
    ).status_code == 200
    async with console_client(app) as browser:
        token = await sign_in(browser, actors.approver2)
        refused = await browser.post(
            f"/console/batches/{second}/approvals", data={"csrf_token": token, "decision": "approve"}
        )
        assert refused.status_code == 409, refused.text
    api = (await client.get(f"/v1/payment-batches/{second}", headers=actors.auditor)).json()
    assert api["status"] == "pending_approval"
    assert [a["approver_name"] for a in api["approvals"]] == ["approver-1"]
    async with session_factory() as session:
        events = await session.scalars(
            select(AuditEvent).where(AuditEvent.action == "payment_batch.approve", AuditEvent.resource_id == second)
        )
        assert len(list(events)) == 1


async def test_text_from_a_request_is_escaped_on_an_error_page(app, api_key_factory):
    """An error's message may quote what was sent (an id that is not one): it is text on the page, never markup."""
    async with console_client(app) as browser:
        await sign_in(browser, await api_key_factory("auditor"))
        page = await browser.get("/console/batches/%3Cb%3Ex")
    assert page.status_code == 422
    assert "<b>" not in page.text
    assert "&lt;" in page.text
