"""The export manifest: a signed statement of a window that `ledger verify --manifest` holds an export to,
so that an export cut at either end or in the middle, or a manifest changed after signing, fails."""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

import openpyxl
import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr, ValidationError
from typer.testing import CliRunner

from cbi_service.cli import app as cli
from cbi_service.exports.keys import DEV_KEY_FILE
from cbi_service.exports.rows import COLUMNS
from cbi_service.exports.schemas import SignedExportManifest
from cbi_service.kit.settings import Settings
from cbi_service.kit.signing import thumbprint
from tests.exports.support import populate
from tests.reconciliation.support import enrol, funded_programme, issue, register, released_batch
from tests.support import assert_problem, make_actors

FORMATS = ("csv", "parquet", "xlsx")


async def _get(client, api_key_factory, path: str, **params: str):
    response = await client.get(path, params=params, headers=await api_key_factory("auditor"))
    assert response.status_code == 200, response.text
    return response


async def _window(client, api_key_factory, tmp_path: Path, fmt: str = "csv", **params: str) -> tuple[Path, Path]:
    """An export of the window and its manifest, saved as an auditor would."""
    export = tmp_path / f"ledger.{fmt}"
    export.write_bytes((await _get(client, api_key_factory, "/v1/ledger/export", format=fmt, **params)).content)
    manifest = tmp_path / "manifest.json"
    manifest.write_bytes((await _get(client, api_key_factory, "/v1/ledger/export/manifest", **params)).content)
    return export, manifest


async def _keys(client, tmp_path: Path) -> Path:
    response = await client.get("/v1/ledger/export/manifest/keys")
    assert response.status_code == 200, response.text
    path = tmp_path / "keys.json"
    path.write_bytes(response.content)
    return path


def verify(export: Path, manifest: Path, keys: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        cli, ["ledger", "verify", *args, "--manifest", str(manifest), "--keys", str(keys), str(export)]
    )
    return result.exit_code, result.output


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def without_transaction(path: Path, transaction_id: str) -> None:
    """The export rewritten in its own format without one transaction's rows."""
    if path.suffix == ".csv":
        write_csv(path, [row for row in read_csv(path) if row["transaction_id"] != transaction_id])
    elif path.suffix == ".parquet":
        table = pq.read_table(path)
        keep = [value != transaction_id for value in table.column("transaction_id").to_pylist()]
        pq.write_table(table.filter(keep), path)
    else:
        book = openpyxl.load_workbook(path)
        sheet = book["entries"]
        for number in reversed(range(2, sheet.max_row + 1)):
            if sheet.cell(number, 1).value == transaction_id:
                sheet.delete_rows(number)
        book.save(path)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_the_manifest_of_a_window_matches_its_export(client, api_key_factory, engine, tmp_path, fmt):
    book = await populate(engine)
    start, end = book.posted_at(9), book.posted_at(14)
    params = {"from": start.isoformat(), "to": end.isoformat()}
    export, manifest_file = await _window(client, api_key_factory, tmp_path, fmt, **params)
    document = json.loads(manifest_file.read_bytes())
    manifest = document["manifest"]
    SignedExportManifest.model_validate(document)  # as documented

    wanted = [tx for tx in book.transactions if start <= tx.posted_at < end]
    assert manifest["format"] == "cbi-ledger-export-manifest/1"
    assert manifest["window"] == {
        "from": start.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "to": end.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "programme_id": None,
    }
    assert manifest["transactions"] == len(wanted)
    assert manifest["entries"] == sum(len(tx.entries) for tx in wanted)
    assert manifest["first_transaction"]["id"] == str(wanted[0].id)
    assert manifest["last_transaction"]["id"] == str(wanted[-1].id)
    assert manifest["first_transaction"]["hash"] == wanted[0].hash.hex()
    assert {s["chain"] for s in manifest["stripes"]} == {tx.chain for tx in wanted}
    assert sum(s["transactions"] for s in manifest["stripes"]) == len(wanted)
    for currency in manifest["currencies"]:
        assert currency["debits_minor"] == currency["credits_minor"], "every transaction sums to zero"
    expected_cop = sum(e.amount for tx in wanted if tx.currency == "COP" for e in tx.entries if e.amount > 0)
    assert {c["currency"]: int(c["credits_minor"]) for c in manifest["currencies"]}["COP"] == expected_cop
    assert set(manifest) >= {"key_id", "generated_at", "transactions_sha256"}
    assert document["signature"].count(".") == 2
    assert document["signature"].split(".")[1] == "", "the payload is detached: the manifest itself"

    keys = await _keys(client, tmp_path)
    code, output = verify(export, manifest_file, keys)
    assert code == 0, output
    assert f"as the manifest signed by {manifest['key_id']}" in output
    assert "nothing missing, nothing added" in output


@pytest.mark.parametrize("fmt", FORMATS)
async def test_an_export_with_its_first_transaction_removed_fails(client, api_key_factory, engine, tmp_path, fmt):
    book = await populate(engine)
    export, manifest = await _window(client, api_key_factory, tmp_path, fmt, **{"from": book.posted_at(9).isoformat()})
    keys = await _keys(client, tmp_path)
    assert verify(export, manifest, keys)[0] == 0

    first = book.transactions[9]
    without_transaction(export, str(first.id))
    assert CliRunner().invoke(cli, ["ledger", "verify", str(export)]).exit_code == 0, "the file alone cannot tell"
    code, output = verify(export, manifest, keys)
    assert code == 1
    assert f"first transaction missing: expected {first.id}" in output
    assert f"chain {first.chain}: first transaction is seq" in output


@pytest.mark.parametrize("fmt", FORMATS)
async def test_an_export_with_its_last_transaction_removed_fails(client, api_key_factory, engine, tmp_path, fmt):
    book = await populate(engine)
    end = book.posted_at(14)
    export, manifest = await _window(client, api_key_factory, tmp_path, fmt, **{"to": end.isoformat()})
    keys = await _keys(client, tmp_path)
    assert verify(export, manifest, keys)[0] == 0

    last = book.transactions[13]
    without_transaction(export, str(last.id))
    assert CliRunner().invoke(cli, ["ledger", "verify", str(export)]).exit_code == 0, "the file alone cannot tell"
    code, output = verify(export, manifest, keys)
    assert code == 1
    assert f"last transaction missing: expected {last.id}" in output
    assert "transactions in the file, the manifest has" in output


async def test_an_export_with_a_middle_transaction_removed_fails(client, api_key_factory, engine, tmp_path):
    book = await populate(engine)
    export, manifest = await _window(client, api_key_factory, tmp_path)
    keys = await _keys(client, tmp_path)
    without_transaction(export, str(book.transactions[5].id))
    code, output = verify(export, manifest, keys)
    assert code == 1
    assert "broken" in output


async def test_a_transaction_added_at_an_end_fails(client, api_key_factory, engine, tmp_path):
    """An export of a wider window is not the export the manifest describes."""
    book = await populate(engine)
    start = book.posted_at(9).isoformat()
    _, manifest = await _window(client, api_key_factory, tmp_path, **{"from": start})
    wider = tmp_path / "wider.csv"
    wider.write_bytes((await _get(client, api_key_factory, "/v1/ledger/export")).content)
    code, output = verify(wider, manifest, await _keys(client, tmp_path))
    assert code == 1
    assert "transaction before the manifest's first" in output


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.update(transactions=m["transactions"] - 1),
        lambda m: m["first_transaction"].update(seq=m["first_transaction"]["seq"] + 1),
        lambda m: m["window"].update(to="2030-01-01T00:00:00.000000Z"),
        lambda m: m["currencies"][0].update(debits_minor="1"),
    ],
    ids=["count", "first", "window", "sum"],
)
async def test_a_manifest_changed_after_signing_fails_its_signature(client, api_key_factory, engine, tmp_path, change):
    await populate(engine)
    export, manifest = await _window(client, api_key_factory, tmp_path)
    document = json.loads(manifest.read_bytes())
    change(document["manifest"])
    manifest.write_text(json.dumps(document, indent=2))
    code, output = verify(export, manifest, await _keys(client, tmp_path))
    assert code == 1
    assert "signature invalid" in output
    assert "was changed after signing" in output


async def test_a_manifest_signed_by_another_key_fails(client, api_key_factory, engine, tmp_path):
    await populate(engine)
    export, manifest = await _window(client, api_key_factory, tmp_path)
    stranger = Ed25519PrivateKey.generate().public_key()
    raw = base64.urlsafe_b64encode(stranger.public_bytes_raw()).rstrip(b"=").decode()
    keys = tmp_path / "other-keys.json"
    keys.write_text(json.dumps({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": raw, "kid": "anything"}]}))
    code, output = verify(export, manifest, keys)
    assert code == 1
    assert "not among the keys given" in output


async def test_a_manifest_needs_keys_and_a_readable_file(client, api_key_factory, engine, tmp_path):
    await populate(engine)
    export, manifest = await _window(client, api_key_factory, tmp_path)
    result = CliRunner().invoke(cli, ["ledger", "verify", "--manifest", str(manifest), str(export)])
    assert result.exit_code == 2
    assert "--manifest needs --keys" in result.output
    code, output = verify(export, export, await _keys(client, tmp_path))
    assert code == 2
    assert "not a manifest" in output


async def test_a_programme_manifest_catches_a_transaction_cut_from_the_middle(
    client, api_key_factory, session_factory, tmp_path
):
    """A programme's export has gaps in its stripes, so the chain cannot show a missing transaction: the
    manifest's counts, sums and digest do."""
    staff = await make_actors(api_key_factory)
    mine = await funded_programme(client, staff, session_factory, name="Mine")
    await funded_programme(client, staff, session_factory, name="Other", funds_minor=7_000_000)
    people = [
        await register(client, staff, "Inés", "Paredes Luna", born="1980-02-02", sex="female", admin1="Arauca"),
        await register(client, staff, "Tomás", "Bravo Celis", born="1975-07-07", sex="male", admin1="Arauca"),
    ]
    await enrol(client, staff, mine, people)
    paid = await released_batch(client, staff, mine, people, cycle="2026-11", amount="250000.00")
    await issue(session_factory, paid[people[0]])

    export, manifest = await _window(client, api_key_factory, tmp_path, "parquet", programme_id=mine)
    keys = await _keys(client, tmp_path)
    statement = json.loads(manifest.read_bytes())["manifest"]
    assert statement["window"]["programme_id"] == mine
    code, output = verify(export, manifest, keys)
    assert code == 0, output
    assert f"programme {mine}" in output

    ids = list(dict.fromkeys(pq.read_table(export).column("transaction_id").to_pylist()))
    assert len(ids) >= 3
    without_transaction(export, ids[1])
    assert CliRunner().invoke(cli, ["ledger", "verify", "--allow-gaps", str(export)]).exit_code == 0
    code, output = verify(export, manifest, keys)
    assert code == 1
    assert f"{len(ids) - 1} transactions in the file, the manifest has {len(ids)}" in output


async def test_an_empty_window_has_a_manifest_an_empty_export_matches(client, api_key_factory, tmp_path):
    params = {"from": "2000-01-01T00:00:00Z", "to": "2000-01-02T00:00:00Z"}
    export, manifest = await _window(client, api_key_factory, tmp_path, **params)
    statement = json.loads(manifest.read_bytes())["manifest"]
    assert (statement["transactions"], statement["first_transaction"], statement["stripes"]) == (0, None, [])
    code, output = verify(export, manifest, await _keys(client, tmp_path))
    assert code == 0, output


@pytest.mark.parametrize("role", ["auditor", "finance"])
async def test_auditors_and_finance_get_manifests_and_each_is_audited(client, api_key_factory, role):
    headers = await api_key_factory(role, name=f"a {role}")
    response = await client.get("/v1/ledger/export/manifest", params={"to": "2030-01-01T00:00:00Z"}, headers=headers)
    assert response.status_code == 200, response.text
    auditor = await api_key_factory("auditor")
    events = await client.get("/v1/audit-events", params={"action": "ledger.manifest_signed"}, headers=auditor)
    [event] = events.json()["items"]
    assert event["actor_name"] == f"a {role}"
    assert event["after"] == {"from": None, "to": "2030-01-01T00:00:00+00:00", "programme_id": None}


@pytest.mark.parametrize("role", ["admin", "registrar", "programme_officer", "approver"])
async def test_other_roles_may_not_get_a_manifest(client, api_key_factory, role):
    response = await client.get("/v1/ledger/export/manifest", headers=await api_key_factory(role))
    assert_problem(response, 403)
    assert response.json()["allowed_roles"] == ["finance", "auditor"]


async def test_a_manifest_needs_a_key_but_its_public_keys_do_not(client):
    assert_problem(await client.get("/v1/ledger/export/manifest"), 401)
    response = await client.get("/v1/ledger/export/manifest/keys")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=300"


async def test_bad_filters_are_refused_as_for_an_export(client, api_key_factory):
    headers = await api_key_factory("auditor")
    path = "/v1/ledger/export/manifest"
    later, earlier = "2026-11-22T10:00:00+00:00", "2026-11-22T09:00:00+00:00"
    assert_problem(await client.get(path, params={"from": later, "to": earlier}, headers=headers), 422)
    assert_problem(await client.get(path, params={"from": "2026-11-22T10:00:00"}, headers=headers), 422)
    unknown = "0190f1c2-0000-7000-8000-000000000000"
    assert_problem(await client.get(path, params={"programme_id": unknown}, headers=headers), 404)


async def test_manifests_are_signed_with_the_configured_ledger_key_not_the_vouchers(
    api_key_factory, settings, engine, tmp_path
):
    import httpx

    from cbi_service.app import create_app

    key = Ed25519PrivateKey.generate()
    seed = SecretStr(base64.b64encode(key.private_bytes_raw()).decode())
    configured = settings.model_copy(update={"ledger_signing_key": seed})
    application = create_app(configured)
    async with (
        application.router.lifespan_context(application),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://testserver") as client,
    ):
        jwks = (await client.get("/v1/ledger/export/manifest/keys")).json()
        document = (await _get(client, api_key_factory, "/v1/ledger/export/manifest")).json()
        vouchers = (await client.get("/v1/vouchers/keys")).json()
    assert [k["kid"] for k in jwks["keys"]] == [thumbprint(key.public_key())] == [document["manifest"]["key_id"]]
    assert jwks["keys"][0]["kid"] not in {k["kid"] for k in vouchers["keys"]}
    assert not (settings.data_dir / DEV_KEY_FILE).exists(), "a configured key is never written to disk"


def test_production_refuses_to_start_without_a_ledger_signing_key():
    voucher_key = SecretStr(base64.b64encode(Ed25519PrivateKey.generate().private_bytes_raw()).decode())
    with pytest.raises(ValidationError, match="CBI_LEDGER_SIGNING_KEY"):
        Settings(env="production", voucher_signing_key=voucher_key)


async def test_a_manifest_carries_no_personal_data(client, api_key_factory, session_factory):
    staff = await make_actors(api_key_factory)
    programme = await funded_programme(client, staff, session_factory, name="Names")
    person = await register(client, staff, "Inés", "Paredes Luna", born="1980-02-02", sex="female", admin1="Arauca")
    await enrol(client, staff, programme, [person])
    await released_batch(client, staff, programme, [person], cycle="2026-11", amount="250000.00")
    text = (await client.get("/v1/ledger/export/manifest", headers=staff.auditor)).text
    for personal in ("Inés", "Paredes", "Luna", "1980-02-02", person):
        assert personal not in text


def test_an_unreadable_ledger_signing_key_stops_start_up(settings):
    from cbi_service.app import create_app
    from cbi_service.kit.signing import SigningKeyError

    with pytest.raises(SigningKeyError, match="CBI_LEDGER_SIGNING_KEY"):
        create_app(settings.model_copy(update={"ledger_signing_key": SecretStr("not a key")}))
