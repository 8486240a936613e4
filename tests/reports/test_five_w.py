"""The 5W (§16) against a hand count, in R4V's template.

Two programmes of one appealing organisation, both in COP: CARD (multipurpose cash on prepaid cards,
100,000.00 a payment, through an implementing partner, an RMRP activity) and VOUCHER (food vouchers,
50,000.00 a payment, implemented directly, not in the RMRP). November 2026 is reported; the rate is
0.00025137 USD per peso. The people (admin1 / admin2, sex, birth, population group):

- Ana, Norte de Santander / Cúcuta, female, 1990, in destination: CARD in October, twice in November
  (not new in November: first reached in October);
- Bruno, Cúcuta, male, 2012, in transit: CARD twice in November (two payments, one person);
- Carla, Norte de Santander / Villa del Rosario, sex other, 1985, pendular: CARD in November;
- Diego, Arauca / Arauca, sex unknown (→ Other), 2020, returnee: CARD twice and VOUCHER once in November;
- Elena, Arauca, female, 2010, host community: CARD in February and November (not new), VOUCHER in November;
- Fausto, La Guajira / Maicao, male, 1970, in destination: VOUCHER in December 2025 and November 2026 (new:
  first time this calendar year);
- Gloria, Maicao, female, 1995, in destination: VOUCHER in November, then erased: still counted;
- Hugo, Cúcuta, male, 1980: his November card failed and his voucher came in December: not reached;
- Irene, Cúcuta, female, born 20 December 2008, in destination: CARD in November. Ages count by birth year
  (the year is what stays in clear, §13): 2026 − 2008 = 18, so above 18 although her birthday is to come.

Values: Cúcuta CARD 5 payments = 500,000 COP → 125.685 → 125.69 USD (half up); Arauca CARD 3 → 75.411 →
75.41; each one-payment row 100,000 → 25.137 → 25.14; the two voucher rows 2 × 50,000 → 25.14.
"""

from __future__ import annotations

import csv
import hashlib
import io
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import openpyxl
import pytest

from cbi_service.fx.service import Rate
from cbi_service.reports import r4v
from cbi_service.reports.service import value_in_usd
from tests.reconciliation.support import enrol, fail, funded_programme, issue, released_batch
from tests.support import assert_problem, make_actors

TEMPLATE = Path(__file__).parent / "r4v" / "template_5w_2025.xlsx"
"""R4V's published 2025 template (response4venezuelans/monitoringQuality2025, `www/template_5w_2025.xlsx`),
as the project's `shared/r4v/` holds it, copied here so that the tests need nothing outside the checkout."""
TEMPLATE_SHA256 = "8631285723d90de0fe29ccdcdde60c087383f5f11bc5f5f61a2112c7b5b1fbc9"
NDS = "Norte de Santander"
CARD_IDENTITY = {
    "appealing_organisation": "Alianza Humanitaria",
    "implementing_partner": "Fundación Frontera Viva",
    "indicator": "Number of people receiving multipurpose cash assistance",
    "activity_name": "MPC frontera",
    "activity_description": "Monthly multipurpose cash on prepaid cards",
    "rmrp_activity": True,
}
VOUCHER_IDENTITY = {
    "appealing_organisation": "Alianza Humanitaria",
    "indicator": "Number of people receiving food assistance through vouchers",
    "activity_name": "Bonos de alimentos",
    "rmrp_activity": False,
}
CARD_CELLS = {
    "Appealing organisation Name": "Alianza Humanitaria",
    "Implementation Set up": "Yes",
    "Implementing partner Name": "Fundación Frontera Viva",
    "Month": "2026-11",
    "Indicator Sector": "Multipurpose Cash Assistance (MCA)",
    "Indicator Indicator": "Number of people receiving multipurpose cash assistance",
    "Activity Name": "MPC frontera",
    "Activity Description": "Monthly multipurpose cash on prepaid cards",
    "RMRP Activity": "Yes",
    "CVA": "Yes",
    "Delivery mechanism": "Prepaid Card",
    "Quantity of output": None,
}
VOUCHER_CELLS = {
    "Appealing organisation Name": "Alianza Humanitaria",
    "Implementation Set up": "No",
    "Implementing partner Name": None,
    "Month": "2026-11",
    "Indicator Sector": "Food Security",
    "Indicator Indicator": "Number of people receiving food assistance through vouchers",
    "Activity Name": "Bonos de alimentos",
    "Activity Description": None,
    "RMRP Activity": "No",
    "CVA": "Yes",
    "Delivery mechanism": "Voucher",
    "Quantity of output": None,
}
NOVEMBER = [
    {
        "Country Country": "Colombia", "Country Admin1": "Arauca", "Admin2 Admin2": "Arauca", **VOUCHER_CELLS,
        "Value (in USD)": "25.14",
        "Total monthly beneficiaries": 2, "New beneficiaries of the month": 2,  # Diego, Elena
        "Refugees and Migrants IN DESTINATION": 0, "Refugees and Migrants IN TRANSIT": 0,
        "Host Communities Beneficiaries": 1, "Refugees and Migrants PENDULARS": 0, "Colombian Returnees": 1,
        "Women under 18": 1, "Men under 18": 0, "Women above 18": 0, "Men above 18": 0,
        "Other under 18": 1, "Other above 18": 0,
    },
    {
        "Country Country": "Colombia", "Country Admin1": "Arauca", "Admin2 Admin2": "Arauca", **CARD_CELLS,
        "Value (in USD)": "75.41",
        "Total monthly beneficiaries": 2, "New beneficiaries of the month": 1,  # Diego, Elena; new: Diego
        "Refugees and Migrants IN DESTINATION": 0, "Refugees and Migrants IN TRANSIT": 0,
        "Host Communities Beneficiaries": 0, "Refugees and Migrants PENDULARS": 0, "Colombian Returnees": 1,
        "Women under 18": 0, "Men under 18": 0, "Women above 18": 0, "Men above 18": 0,
        "Other under 18": 1, "Other above 18": 0,
    },
    {
        "Country Country": "Colombia", "Country Admin1": "La Guajira", "Admin2 Admin2": "Maicao", **VOUCHER_CELLS,
        "Value (in USD)": "25.14",
        "Total monthly beneficiaries": 2, "New beneficiaries of the month": 2,  # Fausto, Gloria
        "Refugees and Migrants IN DESTINATION": 2, "Refugees and Migrants IN TRANSIT": 0,
        "Host Communities Beneficiaries": 0, "Refugees and Migrants PENDULARS": 0, "Colombian Returnees": 0,
        "Women under 18": 0, "Men under 18": 0, "Women above 18": 1, "Men above 18": 1,
        "Other under 18": 0, "Other above 18": 0,
    },
    {
        "Country Country": "Colombia", "Country Admin1": NDS, "Admin2 Admin2": "Cúcuta", **CARD_CELLS,
        "Value (in USD)": "125.69",
        "Total monthly beneficiaries": 3, "New beneficiaries of the month": 2,  # Ana, Bruno, Irene; new: Bruno, Irene
        "Refugees and Migrants IN DESTINATION": 1, "Refugees and Migrants IN TRANSIT": 1,
        "Host Communities Beneficiaries": 0, "Refugees and Migrants PENDULARS": 0, "Colombian Returnees": 0,
        "Women under 18": 0, "Men under 18": 1, "Women above 18": 1, "Men above 18": 0,
        "Other under 18": 0, "Other above 18": 0,
    },
    {
        "Country Country": "Colombia", "Country Admin1": NDS, "Admin2 Admin2": "Villa del Rosario", **CARD_CELLS,
        "Value (in USD)": "25.14",
        "Total monthly beneficiaries": 1, "New beneficiaries of the month": 1,  # Carla
        "Refugees and Migrants IN DESTINATION": 0, "Refugees and Migrants IN TRANSIT": 0,
        "Host Communities Beneficiaries": 0, "Refugees and Migrants PENDULARS": 1, "Colombian Returnees": 0,
        "Women under 18": 0, "Men under 18": 0, "Women above 18": 0, "Men above 18": 0,
        "Other under 18": 0, "Other above 18": 1,
    },
]  # fmt: skip
RATE = {"currency": "COP", "month": "2026-11", "usd_per_unit": "0.00025137", "source": "Banco de la República, TRM"}


def at(day: str) -> datetime:
    return datetime.fromisoformat(f"{day}T15:00:00").replace(tzinfo=UTC)


def template_header() -> list[str]:
    sheet = openpyxl.load_workbook(TEMPLATE).active
    return [cell.value for cell in sheet[1] if cell.value is not None]


def widths(sheet) -> list[float]:
    """Each of the 29 columns' width, the ranges a sheet declares (`<col min max>`) spread over their columns."""
    by_column = {}
    for dimension in sheet.column_dimensions.values():
        for column in range(dimension.min, dimension.max + 1):
            by_column[column] = dimension.width
    return [by_column[column] for column in range(1, 30)]


async def person(client, staff, given, family, born, sex, admin1, admin2, population_type):
    body = {
        "given_names": given, "family_names": family, "date_of_birth": born, "sex": sex, "nationality": "VE",
        "documents": [], "location": {"country": "CO", "admin1": admin1, "admin2": admin2}, "household_size": 2,
        "population_type": population_type,
        "consent": {"given": True, "date": "2025-11-01", "purpose": "cash assistance"},
    }  # fmt: skip
    response = await client.post("/v1/beneficiaries", json=body, headers=staff.registrar)
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "active", response.text
    return response.json()["id"]


@pytest.fixture
async def scenario(client, api_key_factory, session_factory):
    staff = await make_actors(api_key_factory)
    card = await funded_programme(
        client, staff, session_factory, funds_minor=10**10, name="MPC Norte de Santander y Arauca", **CARD_IDENTITY
    )
    voucher = await funded_programme(
        client, staff, session_factory, funds_minor=10**10, name="Bonos", sector="food_security",
        delivery_mechanism="voucher", provider="vouchers", **VOUCHER_IDENTITY,
    )  # fmt: skip
    people = {
        name: await person(client, staff, *details)
        for name, details in {
            "ana": ("Ana María", "Suárez Pino", "1990-02-02", "female", NDS, "Cúcuta", "in_destination"),
            "bruno": ("Bruno", "Linares Ochoa", "2012-05-05", "male", NDS, "Cúcuta", "in_transit"),
            "carla": ("Carla", "Vivas Mora", "1985-04-04", "other", NDS, "Villa del Rosario", "pendular"),
            "diego": ("Diego", "Rangel Peña", "2020-03-03", "unknown", "Arauca", "Arauca", "returnee"),
            "elena": ("Elena", "Chirinos Paz", "2010-07-07", "female", "Arauca", "Arauca", "host_community"),
            "fausto": ("Fausto", "Gil Urdaneta", "1970-01-01", "male", "La Guajira", "Maicao", "in_destination"),
            "gloria": ("Gloria", "Bermúdez Ríos", "1995-09-09", "female", "La Guajira", "Maicao", "in_destination"),
            "hugo": ("Hugo", "Salas Tovar", "1980-08-08", "male", NDS, "Cúcuta", "in_destination"),
            "irene": ("Irene", "Quiroz Lara", "2008-12-20", "female", NDS, "Cúcuta", "in_destination"),
        }.items()
    }
    ana, bruno, carla, diego, elena = (people[n] for n in ("ana", "bruno", "carla", "diego", "elena"))
    fausto, gloria, hugo, irene = (people[n] for n in ("fausto", "gloria", "hugo", "irene"))
    await enrol(client, staff, card, [ana, bruno, carla, diego, elena, hugo, irene])
    await enrol(client, staff, voucher, [diego, elena, fausto, gloria, hugo])

    async def paid(programme, people, cycle, day, amount):
        entitlements = await released_batch(client, staff, programme, people, cycle=cycle, amount=amount)
        for someone in people:
            if someone == hugo and day.startswith("2026-11"):
                await fail(session_factory, entitlements[someone])
            else:
                await issue(session_factory, entitlements[someone], at(day))

    await paid(card, [elena], "2026-02", "2026-02-10", "100000.00")
    await paid(card, [ana], "2026-10", "2026-10-05", "100000.00")
    await paid(card, [ana, bruno, carla, diego, elena, hugo, irene], "2026-11-a", "2026-11-03", "100000.00")
    await paid(card, [ana, bruno, diego], "2026-11-b", "2026-11-20", "100000.00")
    await paid(voucher, [fausto], "2025-12", "2025-12-15", "50000.00")
    await paid(voucher, [diego, elena, fausto, gloria], "2026-11", "2026-11-10", "50000.00")
    await paid(voucher, [hugo], "2026-12", "2026-12-01", "50000.00")
    staff.gloria = gloria
    staff.card, staff.voucher = card, voucher
    return staff


async def test_every_cell_is_the_hand_count_and_the_erased_still_count(client, scenario):
    recorded = await client.post("/v1/fx-rates", json=RATE, headers=scenario.finance)
    assert recorded.status_code == 201, recorded.text
    response = await client.get("/v1/reports/5w", params={"month": "2026-11"}, headers=scenario.officer)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["rows"] == NOVEMBER
    assert [list(row) for row in report["rows"]] == [template_header()] * len(NOVEMBER)
    assert report["header"] == template_header()
    assert report["exchange_rates"] == [
        {
            "currency": "COP",
            "month": "2026-11",
            "usd_per_unit": "0.00025137",
            "source": "Banco de la República, TRM",
            "recorded_at": recorded.json()["created_at"],
        }
    ]
    assert report["missing_exchange_rates"] == []
    assert report["passes_quality_rules"] is True
    assert report["rule_breaks"] == []

    year = {"from": "2026-01-01", "to": "2026-12-31"}
    reached = (await client.get("/v1/reports/people-reached", params=year, headers=scenario.auditor)).json()
    erased = await client.post(
        f"/v1/beneficiaries/{scenario.gloria}/erasure", json={"reason": "asked"}, headers=scenario.admin
    )
    assert erased.status_code == 200, erased.text
    after = (await client.get("/v1/reports/5w", params={"month": "2026-11"}, headers=scenario.auditor)).json()
    assert after == report
    assert (await client.get("/v1/reports/people-reached", params=year, headers=scenario.auditor)).json() == reached


async def test_csv_and_xlsx_carry_the_template_header_and_the_same_cells(client, scenario):
    await client.post("/v1/fx-rates", json=RATE, headers=scenario.finance)
    header = template_header()
    assert len(header) == 29

    response = await client.get(
        "/v1/reports/5w", params={"month": "2026-11", "format": "csv"}, headers=scenario.finance
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert 'filename="5w-2026-11.csv"' in response.headers["content-disposition"]
    lines = list(csv.reader(io.StringIO(response.text)))
    assert lines[0] == header
    assert [dict(zip(header, line, strict=True)) for line in lines[1:]] == [
        {column: "" if value is None else str(value) for column, value in row.items()} for row in NOVEMBER
    ]

    response = await client.get(
        "/v1/reports/5w", params={"month": "2026-11", "format": "xlsx"}, headers=scenario.auditor
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    ours = openpyxl.load_workbook(io.BytesIO(response.content))
    theirs = openpyxl.load_workbook(TEMPLATE)
    sheet, template = ours.active, theirs.active
    assert ours.sheetnames == theirs.sheetnames == ["5W - RMRP 2025"]
    assert [cell.value for cell in sheet[1]] == header
    assert sheet.max_column == len(header)
    assert sheet.row_dimensions[1].height == template.row_dimensions[1].height == 30
    assert widths(sheet) == widths(template)
    for cell, model in zip(sheet[1], template[1], strict=False):
        looks = (cell.font.b, cell.alignment.horizontal, cell.alignment.vertical, cell.alignment.wrap_text)
        assert looks == (model.font.b, model.alignment.horizontal, model.alignment.vertical, model.alignment.wrap_text)
        assert cell.fill.fill_type == model.fill.fill_type == "solid"
    cells = [[cell.value for cell in row] for row in sheet.iter_rows(min_row=2)]
    expected = [[row[c] for c in header] for row in NOVEMBER]
    value = header.index("Value (in USD)")
    for line in expected:
        line[value] = Decimal(line[value])
    assert [[Decimal(str(v)) if i == value else v for i, v in enumerate(line)] for line in cells] == expected
    assert all(isinstance(line[header.index("Total monthly beneficiaries")], int) for line in cells)


async def test_the_hxl_row_sits_under_the_header(client, scenario):
    await client.post("/v1/fx-rates", json=RATE, headers=scenario.finance)
    params = {"month": "2026-11", "format": "csv", "hxl": "true"}
    response = await client.get("/v1/reports/5w", params=params, headers=scenario.officer)
    lines = list(csv.reader(io.StringIO(response.text)))
    assert lines[0] == template_header()
    assert lines[1][:3] == ["#country+name", "#adm1+name", "#adm2+name"]
    assert all(tag.startswith("#") for tag in lines[1])
    assert len(set(lines[1])) == 29
    assert len(lines) == 2 + len(NOVEMBER)
    response = await client.get("/v1/reports/5w", params=params | {"format": "xlsx"}, headers=scenario.officer)
    workbook = openpyxl.load_workbook(io.BytesIO(response.content))
    assert [cell.value for cell in workbook.active[2]] == lines[1]


async def test_a_month_without_a_rate_says_so_and_reports_no_value(client, scenario):
    await client.post("/v1/fx-rates", json=RATE, headers=scenario.finance)  # November's: October has none
    report = (await client.get("/v1/reports/5w", params={"month": "2026-10"}, headers=scenario.officer)).json()
    assert report["rows"] == [
        {
            "Country Country": "Colombia", "Country Admin1": NDS, "Admin2 Admin2": "Cúcuta", **CARD_CELLS,
            "Month": "2026-10", "Value (in USD)": None,
            "Total monthly beneficiaries": 1, "New beneficiaries of the month": 1,  # Ana
            "Refugees and Migrants IN DESTINATION": 1, "Refugees and Migrants IN TRANSIT": 0,
            "Host Communities Beneficiaries": 0, "Refugees and Migrants PENDULARS": 0, "Colombian Returnees": 0,
            "Women under 18": 0, "Men under 18": 0, "Women above 18": 1, "Men above 18": 0,
            "Other under 18": 0, "Other above 18": 0,
        }
    ]  # fmt: skip
    assert report["exchange_rates"] == []
    assert report["missing_exchange_rates"] == [{"currency": "COP", "month": "2026-10"}]
    assert report["passes_quality_rules"] is False
    [broken] = report["rule_breaks"]
    assert (broken["row"], broken["rule"], broken["problem"]) == (
        0,
        "cva_yes",
        "CVA is Yes but Value (in USD) is empty",
    )
    assert broken["programme_ids"] == [scenario.card]
    for file_format in ("csv", "xlsx"):
        params = {"month": "2026-10", "format": file_format}
        problem = assert_problem(await client.get("/v1/reports/5w", params=params, headers=scenario.officer), 409)
        assert problem["missing_exchange_rates"] == [{"currency": "COP", "month": "2026-10"}]
        assert problem["errors"] == [
            {"field": "rows[0].CVA", "message": "cva_yes: CVA is Yes but Value (in USD) is empty"}
        ]


async def test_a_person_counts_once_in_an_activity_reported_by_two_programmes(client, api_key_factory, session_factory):
    staff = await make_actors(api_key_factory)
    first = await funded_programme(client, staff, session_factory, name="Cash A", **CARD_IDENTITY)
    second = await funded_programme(client, staff, session_factory, name="Cash B", **CARD_IDENTITY)
    someone = await person(client, staff, "Rosa", "Linares", "1991-01-01", "female", NDS, "Cúcuta", "in_destination")
    for programme in (first, second):
        await enrol(client, staff, programme, [someone])
        paid = await released_batch(client, staff, programme, [someone], cycle="2026-11")
        await issue(session_factory, paid[someone], at("2026-11-05"))
    await client.post("/v1/fx-rates", json=RATE, headers=staff.finance)
    report = (await client.get("/v1/reports/5w", params={"month": "2026-11"}, headers=staff.officer)).json()
    [row] = report["rows"]
    assert row["Total monthly beneficiaries"] == row["New beneficiaries of the month"] == 1
    assert row["Value (in USD)"] == "50.27"  # 200,000 COP × 0.00025137 = 50.274


async def test_a_programme_without_its_reporting_identity_is_named_until_it_has_one(
    client, api_key_factory, session_factory
):
    staff = await make_actors(api_key_factory)
    programme = await funded_programme(client, staff, session_factory, name="Before the 5W")
    someone = await person(client, staff, "Rosa", "Linares", "1991-01-01", "female", NDS, None, "in_destination")
    await enrol(client, staff, programme, [someone])
    paid = await released_batch(client, staff, programme, [someone], cycle="2026-11")
    await issue(session_factory, paid[someone], at("2026-11-05"))
    await client.post("/v1/fx-rates", json=RATE, headers=staff.finance)
    report = (await client.get("/v1/reports/5w", params={"month": "2026-11"}, headers=staff.officer)).json()
    [broken] = report["rule_breaks"]
    assert broken["rule"] == "reporting_identity"
    assert broken["problem"].startswith(
        "empty: Appealing organisation Name, Indicator Indicator, Activity Name, RMRP Activity"
    )
    assert report["rows"][0]["Admin2 Admin2"] is None
    params = {"month": "2026-11", "format": "csv"}
    assert_problem(await client.get("/v1/reports/5w", params=params, headers=staff.officer), 409)
    patched = await client.patch(f"/v1/programmes/{programme}", json=CARD_IDENTITY, headers=staff.officer)
    assert patched.status_code == 200, patched.text
    response = await client.get("/v1/reports/5w", params=params, headers=staff.officer)
    assert response.status_code == 200, response.text
    [line] = list(csv.DictReader(io.StringIO(response.text)))
    assert (line["Activity Name"], line["Admin2 Admin2"], line["Value (in USD)"]) == ("MPC frontera", "", "25.14")


async def test_an_empty_month_a_country_filter_and_bad_parameters(client, scenario):
    empty = await client.get("/v1/reports/5w", params={"month": "2026-03", "format": "csv"}, headers=scenario.officer)
    assert list(csv.reader(io.StringIO(empty.text))) == [template_header()]
    await client.post("/v1/fx-rates", json=RATE, headers=scenario.finance)
    elsewhere = await client.get(
        "/v1/reports/5w", params={"month": "2026-11", "country": "EC"}, headers=scenario.officer
    )
    assert elsewhere.json()["rows"] == []
    colombia = await client.get(
        "/v1/reports/5w", params={"month": "2026-11", "country": "CO"}, headers=scenario.officer
    )
    assert colombia.json()["rows"] == NOVEMBER
    for params in (
        {},
        {"month": "2026-13"},
        {"month": "2026-1"},
        {"month": "２０２６-１１"},
        {"month": "2026-11", "format": "pdf"},
        {"month": "2026-11", "country": "co"},
        {"month": "2026-11", "hxl": "maybe"},
    ):
        assert_problem(await client.get("/v1/reports/5w", params=params, headers=scenario.officer), 422)


def test_values_are_exact_until_one_rounding_to_the_cent():
    cop = Rate("COP", "2026-11", Decimal("0.000250000000000000000001"), "test", None)
    jpy = Rate("JPY", "2026-11", Decimal("0.0066"), "test", None)
    assert value_in_usd({"COP": 2**53}, {"COP": cop}) == Decimal("22517998136.85")  # 90,071,992,547,409.92 COP
    assert value_in_usd({"COP": 2, "JPY": 75}, {"COP": cop, "JPY": jpy}) == Decimal("0.50")  # 0.000005 + 0.495
    assert value_in_usd({"COP": 100, "JPY": 1}, {"COP": cop}) is None
    assert value_in_usd({"COP": 4000 * 100}, {"COP": Rate("COP", "2026-11", Decimal("0.00025"), "t", None)}) == 1


GOOD_ROW = NOVEMBER[3] | {"Value (in USD)": Decimal("125.69")}
# New above Total, its breakdowns still summing to it.
NEW_ABOVE_TOTAL = {"New beneficiaries of the month": 4, "Refugees and Migrants IN DESTINATION": 3, "Women above 18": 3}


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"Month": "2026-11-01"}, "month_format"),
        ({"Month": "11/2026"}, "month_format"),
        ({"Implementation Set up": "No"}, "implementing_partner"),
        ({"Implementing partner Name": None}, "implementing_partner"),
        ({"Value (in USD)": None}, "cva_yes"),
        ({"Value (in USD)": Decimal("0.00")}, "cva_yes"),
        ({"CVA": "No", "Indicator Sector": "Food Security"}, "cva_no"),
        ({"CVA": "No"}, "multipurpose_cash_is_cva"),
        ({"Delivery mechanism": "Prepaid card"}, "delivery_mechanism_2025"),
        ({"Delivery mechanism": None}, "delivery_mechanism_2025"),
        (NEW_ABOVE_TOTAL, "new_within_total"),
        ({"Colombian Returnees": 1}, "population_sum"),
        ({"Other above 18": 1}, "age_sex_sum"),
        ({"Indicator Indicator": None}, "reporting_identity"),
        ({"RMRP Activity": None}, "reporting_identity"),
    ],
)
def test_each_rule_names_the_row_that_breaks_it(change, rule):
    assert r4v.broken_rules(GOOD_ROW) == []
    assert rule in {broken.code for broken, _ in r4v.broken_rules(GOOD_ROW | change)}


def test_a_cva_no_row_passes_with_nothing_to_value():
    row = GOOD_ROW | {"CVA": "No", "Indicator Sector": "Protection", "Value (in USD)": None, "Delivery mechanism": None}
    assert r4v.broken_rules(row) == []


def test_the_header_is_the_templates_and_each_column_has_a_hashtag():
    assert list(r4v.HEADER) == template_header()
    assert set(r4v.HXL) == set(r4v.HEADER)
    assert widths(openpyxl.load_workbook(TEMPLATE).active) == list(r4v.COLUMN_WIDTHS)


def test_the_template_here_is_the_one_r4v_published():
    assert hashlib.sha256(TEMPLATE.read_bytes()).hexdigest() == TEMPLATE_SHA256
    shared = Path(__file__).resolve().parents[3] / "shared" / "r4v" / "template_5w_2025.xlsx"
    if shared.exists():  # the project's shared folder, beside the checkout
        assert shared.read_bytes() == TEMPLATE.read_bytes()
