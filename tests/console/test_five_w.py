"""The 5W page (§16, §17) over HTTP: the API's report as a table and charts, each row's rule breaks and the
missing rates said plainly, and the files served to the session only when R4V would take them.

One programme with its reporting identity pays Ana (Arauca) and Bruno (Norte de Santander) 100,000.00 COP
each in November 2026: two rows; at 0.00025137 USD per peso each is worth 25.14 USD."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta

import openpyxl
import pytest

from tests.console.support import console_client, sign_in
from tests.reconciliation.support import enrol, funded_programme, issue, register, released_batch
from tests.support import make_actors

IDENTITY = {
    "appealing_organisation": "Alianza Humanitaria",
    "implementing_partner": "Fundación Frontera Viva",
    "indicator": "Number of people receiving multipurpose cash assistance",
    "activity_name": "MPC frontera",
    "rmrp_activity": True,
}
RATE = {"currency": "COP", "month": "2026-11", "usd_per_unit": "0.00025137", "source": "Banco de la República, TRM"}
NOVEMBER = {"month": "2026-11"}
URL = "/console/reports/5w"


@pytest.fixture
async def november(client, api_key_factory, session_factory):
    staff = await make_actors(api_key_factory)
    programme = await funded_programme(client, staff, session_factory, name="Frontera noviembre", **IDENTITY)
    ana = await register(client, staff, "Ana", "Pérez Mora", born="1990-02-02", sex="female", admin1="Arauca")
    bruno = await register(
        client, staff, "Bruno", "Linares", born="2012-05-05", sex="male", admin1="Norte de Santander"
    )
    await enrol(client, staff, programme, [ana, bruno])
    paid = await released_batch(client, staff, programme, [ana, bruno], cycle="2026-11")
    for entitlement in paid.values():
        await issue(session_factory, entitlement, datetime(2026, 11, 5, 15, tzinfo=UTC))
    return staff


def _file_links(html: str) -> list[str]:
    return [link.replace("&amp;", "&") for link in re.findall(r'href="(/console/reports/5w/file\?[^"]+)"', html)]


async def test_an_auditor_sees_the_rows_the_breaks_and_the_missing_rate_then_the_files(app, client, november):
    async with console_client(app) as browser:  # every page it gets is checked for references elsewhere
        await sign_in(browser, november.auditor)
        page = await browser.get(URL, params=NOVEMBER)
        assert page.status_code == 200, page.text
        assert 'href="/console/reports/5w" aria-current="page"' in page.text  # the nav link
        assert "Arauca" in page.text
        assert "Norte de Santander" in page.text
        assert "MPC frontera" in page.text
        assert "2 rows" in page.text
        assert 'id="missing-rate-COP"' in page.text
        assert "No exchange rate for COP in 2026-11" in page.text
        assert "2 rows of 2 break R4V's quality rules" in page.text
        assert page.text.count('<tr class="broken">') == 2
        assert page.text.count("CVA Yes needs a Value (in USD) above 0 and a Delivery mechanism.") == 2
        assert "CVA is Yes but Value (in USD) is empty" in page.text  # what is wrong, as the API says it
        assert "Frontera noviembre" in page.text  # the programme to fix
        assert "no rate" in page.text
        assert _file_links(page.text) == []  # nothing R4V would refuse is offered
        assert 'class="chart"' in page.text  # the bars, drawn on the server
        # Only the SVG namespace names a site: the page loads nothing from anywhere.
        assert set(re.findall(r"https?://[^\s\"'<>]+", page.text)) == {"http://www.w3.org/2000/svg"}
        refused = await browser.get(f"{URL}/file", params=NOVEMBER | {"format": "csv"})
        assert refused.status_code == 409
        assert "R4V would refuse the file" in refused.text
        assert "rows[0].CVA" in refused.text

        recorded = await client.post("/v1/fx-rates", json=RATE, headers=november.finance)
        assert recorded.status_code == 201, recorded.text
        page = await browser.get(URL, params=NOVEMBER)
        assert 'id="missing-rate-COP"' not in page.text
        assert 'class="broken"' not in page.text
        assert 'id="rules-pass"' in page.text
        assert page.text.count("25.14 USD") == 2
        assert "Banco de la República, TRM" in page.text
        assert "0.00025137" in page.text
        links = _file_links(page.text)
        assert links == [
            f"{URL}/file?month=2026-11&format=xlsx",
            f"{URL}/file?month=2026-11&format=xlsx&hxl=true",
            f"{URL}/file?month=2026-11&format=csv",
            f"{URL}/file?month=2026-11&format=csv&hxl=true",
        ]
        for link in links:
            served = await browser.get(link)
            assert served.status_code == 200, served.text
            params = dict(part.split("=") for part in link.partition("?")[2].split("&"))
            api = await client.get("/v1/reports/5w", params=params, headers=november.auditor)
            assert api.status_code == 200, api.text
            assert served.headers["content-type"] == api.headers["content-type"]
            assert served.headers["content-disposition"] == api.headers["content-disposition"]
            if params["format"] == "csv":
                assert served.content == api.content
                assert len(list(csv.reader(io.StringIO(served.text)))) == 3 + (params.get("hxl") == "true")
            else:
                ours, theirs = (openpyxl.load_workbook(io.BytesIO(r.content)).active for r in (served, api))
                assert list(ours.values) == list(theirs.values)


async def test_the_page_speaks_spanish_and_filters_by_month_and_country(app, november):
    async with console_client(app) as browser:
        await sign_in(browser, november.officer)
        spanish = await browser.get(URL, params=NOVEMBER, headers={"Accept-Language": "es"})
        assert spanish.status_code == 200
        assert "Informe 5W" in spanish.text
        assert "No hay tasa de cambio para COP en 2026-11" in spanish.text
        assert "CVA Yes exige un Value (in USD) mayor que 0" in spanish.text
        assert "Beneficiarios nuevos del mes por sexo y edad" in spanish.text
        elsewhere = await browser.get(URL, params=NOVEMBER | {"country": "EC"})
        assert elsewhere.status_code == 200
        assert "Nobody was paid in this month." in elsewhere.text
        assert "Arauca" not in elsewhere.text
        blank = await browser.get(URL, params={"month": "", "country": ""})  # the form sent as it first shows
        assert blank.status_code == 200
        last_month = (datetime.now(UTC).date().replace(day=1) - timedelta(days=1)).strftime("%Y-%m")
        assert f'name="month" type="month" value="{last_month}"' in blank.text
        for params in ({"month": "2026-13"}, {"month": "２０２６-１１"}, {"month": "2026-11", "country": "co"}):
            bad = await browser.get(URL, params=params)
            assert bad.status_code == 422, params
            assert bad.headers["content-type"].startswith("text/html")
        for params in ({"month": "2026-11"}, {"month": "2026-11", "format": "pdf"}, {"format": "csv"}):
            assert (await browser.get(f"{URL}/file", params=params)).status_code == 422, params


@pytest.mark.parametrize("role", ["admin", "approver", "registrar"])
async def test_a_role_the_api_refuses_is_refused_the_same(app, client, api_key_factory, role):
    key = await api_key_factory(role)
    api = await client.get("/v1/reports/5w", params=NOVEMBER, headers=key)
    assert api.status_code == 403
    async with console_client(app) as browser:
        await sign_in(browser, key)
        for path, params in ((URL, NOVEMBER), (f"{URL}/file", NOVEMBER | {"format": "csv"})):
            page = await browser.get(path, params=params)
            assert page.status_code == 403
            assert set(re.findall(r"<code>([a-z_]+)</code>", page.text)) == set(api.json()["allowed_roles"])
        home = await browser.get("/console", follow_redirects=True)
        assert 'href="/console/reports/5w"' not in home.text  # no nav link to a page it cannot open
