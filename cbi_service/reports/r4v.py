"""R4V's 2025 5W template and the quality rules R4V's own check applies to it (`shared/r4v/README.md`).

R4V's quality-check tool takes a file only when its header is the template's, column for column, so the
header below is the template's exact text. The labels this service writes into it (sectors, delivery
mechanisms, Yes/No) are R4V's words; the rules are checked on the finished row, cell by cell, the way R4V's
tool reads the file, so a row built wrong is caught whatever built it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pycountry

COUNTRY = "Country Country"
ADMIN1 = "Country Admin1"
ADMIN2 = "Admin2 Admin2"
APPEALING_ORGANISATION = "Appealing organisation Name"
IMPLEMENTATION_SET_UP = "Implementation Set up"
IMPLEMENTING_PARTNER = "Implementing partner Name"
MONTH = "Month"
SECTOR = "Indicator Sector"
INDICATOR = "Indicator Indicator"
ACTIVITY_NAME = "Activity Name"
ACTIVITY_DESCRIPTION = "Activity Description"
RMRP_ACTIVITY = "RMRP Activity"
CVA = "CVA"
VALUE = "Value (in USD)"
DELIVERY_MECHANISM = "Delivery mechanism"
QUANTITY = "Quantity of output"
TOTAL = "Total monthly beneficiaries"
NEW = "New beneficiaries of the month"

POPULATION_COLUMNS = {
    "in_destination": "Refugees and Migrants IN DESTINATION",
    "in_transit": "Refugees and Migrants IN TRANSIT",
    "host_community": "Host Communities Beneficiaries",
    "pendular": "Refugees and Migrants PENDULARS",
    "returnee": "Colombian Returnees",
}
"""The template's population columns (in its order) by the population type beneficiaries carry (§4)."""
AGE_SEX_COLUMNS = (
    "Women under 18",
    "Men under 18",
    "Women above 18",
    "Men above 18",
    "Other under 18",
    "Other above 18",
)

HEADER: tuple[str, ...] = (
    COUNTRY, ADMIN1, ADMIN2, APPEALING_ORGANISATION, IMPLEMENTATION_SET_UP, IMPLEMENTING_PARTNER, MONTH,
    SECTOR, INDICATOR, ACTIVITY_NAME, ACTIVITY_DESCRIPTION, RMRP_ACTIVITY, CVA, VALUE, DELIVERY_MECHANISM,
    QUANTITY, TOTAL, NEW, *POPULATION_COLUMNS.values(), *AGE_SEX_COLUMNS,
)  # fmt: skip
"""The 2025 template's header, in order (the first row of its sheet)."""

#: The hashtag row HXL tools read under the header. HXL 1.1 core hashtags and attributes where one fits
#: (`#adm1`, `#org+impl`, `#sector`, `#indicator`, `#activity`, `#delivery`, `#value`, `#output`, `#reached`,
#: `+f`/`+m`, `+children`/`+adults`, `+refugees`, `+host`, `+returnees`); the rest are attributes of the
#: template's own (`+appealing`, `+rmrp`, `+cva`, `+new`, `+destination`, `+transit`, `+pendular`, `+other`).
HXL: dict[str, str] = {
    COUNTRY: "#country+name",
    ADMIN1: "#adm1+name",
    ADMIN2: "#adm2+name",
    APPEALING_ORGANISATION: "#org+appealing+name",
    IMPLEMENTATION_SET_UP: "#org+impl+set_up",
    IMPLEMENTING_PARTNER: "#org+impl+name",
    MONTH: "#date+month",
    SECTOR: "#sector+name",
    INDICATOR: "#indicator+name",
    ACTIVITY_NAME: "#activity+name",
    ACTIVITY_DESCRIPTION: "#activity+description",
    RMRP_ACTIVITY: "#activity+rmrp",
    CVA: "#activity+cva",
    VALUE: "#value+usd",
    DELIVERY_MECHANISM: "#delivery+type",
    QUANTITY: "#output+num",
    TOTAL: "#reached+total",
    NEW: "#reached+new",
    "Refugees and Migrants IN DESTINATION": "#reached+new+refugees+destination",
    "Refugees and Migrants IN TRANSIT": "#reached+new+refugees+transit",
    "Host Communities Beneficiaries": "#reached+new+host",
    "Refugees and Migrants PENDULARS": "#reached+new+refugees+pendular",
    "Colombian Returnees": "#reached+new+returnees",
    "Women under 18": "#reached+new+f+children",
    "Men under 18": "#reached+new+m+children",
    "Women above 18": "#reached+new+f+adults",
    "Men above 18": "#reached+new+m+adults",
    "Other under 18": "#reached+new+other+children",
    "Other above 18": "#reached+new+other+adults",
}

# The template's sheet, as R4V publishes it: its name, the header row's height and look, each column's width.
SHEET_NAME = "5W - RMRP 2025"
HEADER_ROW_HEIGHT = 30.0
HEADER_FILL = "0E2841"  # the template's theme colour 3 (dark blue) as RGB
HEADER_FONT = "F2F2F2"  # its theme colour 0 (white) at tint -0.05
COLUMN_WIDTHS = (
    15, 14, 13, 27, 21, 25, 7.5703125, 16, 19, 13, 20, 13, 4.7109375, 14, 18, 18, 27, 30, 36, 32, 30, 31, 19, 14,
    12, 14, 12, 14, 14,
)  # fmt: skip

YES, NO = "Yes", "No"
MULTIPURPOSE_CASH = "Multipurpose Cash Assistance (MCA)"
SECTORS = {
    "multipurpose_cash": MULTIPURPOSE_CASH,
    "food_security": "Food Security",
    "shelter": "Shelter",
    "humanitarian_transport": "Humanitarian Transportation",
    "protection": "Protection",
    "wash": "WASH",
    "health": "Health",
    "education": "Education",
    "integration": "Integration",
}
"""R4V's sector names, by the programme sectors of §3."""
DELIVERY_MECHANISMS_2025 = (
    "Beneficiary Bank Account",
    "Mobile Money",
    "Prepaid Card",
    "Cash Collection Over the Counter (OTC)",
    "Direct Cash (Cash in Hand)",
    "Cardless ATM Withdrawal",
    "Voucher",
    "Other",
)
DELIVERY_MECHANISMS = {"prepaid_card": "Prepaid Card", "voucher": "Voucher", "paper_voucher": "Voucher"}
"""R4V's delivery mechanism for each of the programmes' (§3, §14); one not listed here is left empty, and the
row is then named as breaking the rule rather than filed as `Other`."""


def country_name(code: str) -> str:
    """The country as the 5W names it ("Colombia", "Venezuela", "Bolivia"): ISO 3166's common name where it
    has one, its name otherwise; a code ISO does not know stays as it is."""
    country = pycountry.countries.get(alpha_2=code)
    if country is None:
        return code
    return str(getattr(country, "common_name", None) or country.name)


IDENTITY_COLUMNS = (APPEALING_ORGANISATION, SECTOR, INDICATOR, ACTIVITY_NAME, RMRP_ACTIVITY)
_YEAR_MONTH = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")


def _count(row: Mapping[str, Any], column: str) -> int:
    value = row.get(column)
    return value if isinstance(value, int) else 0


def _filled(value: Any) -> bool:
    return value is not None and value != ""


def _month(row: Mapping[str, Any]) -> str | None:
    month = row.get(MONTH)
    if isinstance(month, str) and _YEAR_MONTH.fullmatch(month):
        return None
    return "Month is not YYYY-MM"


def _implementing_partner(row: Mapping[str, Any]) -> str | None:
    set_up, partner = row.get(IMPLEMENTATION_SET_UP), row.get(IMPLEMENTING_PARTNER)
    if set_up not in (YES, NO):
        return "Implementation Set up is neither Yes nor No"
    if _filled(partner) and set_up != YES:
        return "an Implementing partner is named but Implementation Set up is not Yes"
    if not _filled(partner) and set_up == YES:
        return "Implementation Set up is Yes but no Implementing partner is named"
    return None


def _cva_yes(row: Mapping[str, Any]) -> str | None:
    if row.get(CVA) != YES:
        return None
    value = row.get(VALUE)
    if not isinstance(value, Decimal):
        return "CVA is Yes but Value (in USD) is empty"
    if value <= 0:
        return "CVA is Yes but Value (in USD) is not above 0"
    if not _filled(row.get(DELIVERY_MECHANISM)):
        return "CVA is Yes but Delivery mechanism is empty"
    return None


def _cva_no(row: Mapping[str, Any]) -> str | None:
    if row.get(CVA) == YES:
        return None
    if row.get(CVA) != NO:
        return "CVA is neither Yes nor No"
    if _filled(row.get(VALUE)) or _filled(row.get(DELIVERY_MECHANISM)):
        return "CVA is No but Value (in USD) or Delivery mechanism is filled"
    return None


def _multipurpose_cash(row: Mapping[str, Any]) -> str | None:
    if row.get(SECTOR) == MULTIPURPOSE_CASH and row.get(CVA) != YES:
        return "a multipurpose cash row is not CVA Yes"
    return None


def _delivery_mechanism(row: Mapping[str, Any]) -> str | None:
    mechanism = row.get(DELIVERY_MECHANISM)
    if _filled(mechanism) and mechanism not in DELIVERY_MECHANISMS_2025:
        return "Delivery mechanism is not one of R4V's 2025 list"
    if not _filled(mechanism) and row.get(CVA) == YES:
        return "the programme's delivery mechanism has no counterpart in R4V's 2025 list"
    return None


def _new_within_total(row: Mapping[str, Any]) -> str | None:
    if _count(row, NEW) > _count(row, TOTAL):
        return "New beneficiaries of the month exceeds Total monthly beneficiaries"
    return None


def _populations(row: Mapping[str, Any]) -> str | None:
    if sum(_count(row, c) for c in POPULATION_COLUMNS.values()) != _count(row, NEW):
        return "the five population columns do not sum to New beneficiaries of the month"
    return None


def _age_sex(row: Mapping[str, Any]) -> str | None:
    if sum(_count(row, c) for c in AGE_SEX_COLUMNS) != _count(row, NEW):
        return "the six age and sex columns do not sum to New beneficiaries of the month"
    return None


def _identity(row: Mapping[str, Any]) -> str | None:
    missing = [c for c in IDENTITY_COLUMNS if not _filled(row.get(c))]
    if missing:
        return f"empty: {', '.join(missing)} (the programme's reporting identity, PATCH /v1/programmes/{{id}})"
    return None


@dataclass(frozen=True)
class Rule:
    code: str
    text: str
    columns: tuple[str, ...]
    check: Callable[[Mapping[str, Any]], str | None]


RULES = (
    Rule("month_format", "Month is YYYY-MM.", (MONTH,), _month),
    Rule(
        "implementing_partner",
        'Implementing partner is filled only when "Implementation Set up" is Yes.',
        (IMPLEMENTATION_SET_UP, IMPLEMENTING_PARTNER),
        _implementing_partner,
    ),
    Rule(
        "cva_yes",
        "CVA Yes needs a Value (in USD) above 0 and a Delivery mechanism.",
        (CVA, VALUE, DELIVERY_MECHANISM),
        _cva_yes,
    ),
    Rule(
        "cva_no",
        "CVA No leaves Value (in USD) and Delivery mechanism empty.",
        (CVA, VALUE, DELIVERY_MECHANISM),
        _cva_no,
    ),
    Rule("multipurpose_cash_is_cva", "Multipurpose cash rows are CVA Yes.", (SECTOR, CVA), _multipurpose_cash),
    Rule(
        "delivery_mechanism_2025",
        "Delivery mechanism is one of R4V's 2025 list.",
        (DELIVERY_MECHANISM,),
        _delivery_mechanism,
    ),
    Rule("new_within_total", "New ≤ Total.", (NEW, TOTAL), _new_within_total),
    Rule(
        "population_sum",
        "The five population columns sum to New.",
        (NEW, *POPULATION_COLUMNS.values()),
        _populations,
    ),
    Rule("age_sex_sum", "The six age/sex columns sum to New.", (NEW, *AGE_SEX_COLUMNS), _age_sex),
    Rule(
        "reporting_identity",
        "Appealing organisation, sector, indicator, activity name and RMRP Activity are filled (R4V's platform "
        "takes no row without them).",
        IDENTITY_COLUMNS,
        _identity,
    ),
)
"""R4V's published rules (`shared/r4v/README.md`), in its order, and the template's required identity."""


def broken_rules(row: Mapping[str, Any]) -> list[tuple[Rule, str]]:
    """Each rule `row` (a template row: its cells by header, `Value (in USD)` a Decimal or None) breaks, with
    what is wrong; an empty list for a row R4V's check passes."""
    return [(rule, problem) for rule in RULES if (problem := rule.check(row)) is not None]
