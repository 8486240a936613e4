"""The reports' SQL: each report one statement, so each is read from one snapshot."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

AGE_GROUPS = ("0-5", "6-11", "12-17", "18-59", "60+")

# A person is reached when one of their entitlements was issued in the window; `issued` holds every such
# issue. `ages` fixes the age group at the person's first issue in the period (month NULL) and in each
# month, one grouping set each. Every scope counts distinct people, however many payments they received.
# The age is the one reached in the calendar year of that issue (year - birth year): the full birth date
# is sealed (§13), and an erased person keeps only the year, so the count stays the same after erasure.
PEOPLE_REACHED_SQL = """
WITH issued AS (
    SELECT e.beneficiary_id, p.sector, e.issued_at,
           to_char(e.issued_at AT TIME ZONE 'UTC', 'YYYY-MM') AS month
      FROM entitlements e
      JOIN programmes p ON p.id = e.programme_id
     WHERE e.issued_at >= :start AND e.issued_at < :end
), firsts AS (
    SELECT beneficiary_id, month, min(issued_at) AS at
      FROM issued
     GROUP BY GROUPING SETS ((beneficiary_id), (beneficiary_id, month))
), ages AS (
    SELECT f.beneficiary_id, f.month, b.location_country AS country, b.location_admin1 AS admin1, b.sex,
           CASE
               WHEN age < 6 THEN '0-5'
               WHEN age < 12 THEN '6-11'
               WHEN age < 18 THEN '12-17'
               WHEN age < 60 THEN '18-59'
               ELSE '60+'
           END AS age_group
      FROM firsts f
      JOIN beneficiaries b ON b.id = f.beneficiary_id
     CROSS JOIN LATERAL (
           SELECT date_part('year', (f.at AT TIME ZONE 'UTC'))::int - b.birth_year AS age
     ) years
)
SELECT 'period' AS scope, NULL AS month, a.country, a.admin1, i.sector, a.sex, a.age_group,
       count(DISTINCT i.beneficiary_id) AS people
  FROM issued i
  JOIN ages a ON a.beneficiary_id = i.beneficiary_id AND a.month IS NULL
 GROUP BY a.country, a.admin1, i.sector, a.sex, a.age_group
UNION ALL
SELECT 'month', i.month, a.country, a.admin1, i.sector, a.sex, a.age_group, count(DISTINCT i.beneficiary_id)
  FROM issued i
  JOIN ages a ON a.beneficiary_id = i.beneficiary_id AND a.month = i.month
 GROUP BY i.month, a.country, a.admin1, i.sector, a.sex, a.age_group
UNION ALL
SELECT 'period_total', NULL, NULL, NULL, NULL, NULL, NULL, count(DISTINCT beneficiary_id) FROM issued
UNION ALL
SELECT 'month_total', month, NULL, NULL, NULL, NULL, NULL, count(DISTINCT beneficiary_id)
  FROM issued
 GROUP BY month
"""


async def people_reached_rows(session: AsyncSession, start: datetime, end: datetime) -> Sequence[Any]:
    result = await session.execute(text(PEOPLE_REACHED_SQL), {"start": start, "end": end})
    return result.all()


# The 5W of one month (§16), one statement. `activity` numbers the programmes by the reporting identity
# they share (the service groups them): programmes reporting the same activity are one row, their people
# counted once. `reached` is each person under each activity with an issue in the month, from their issues
# since 1 January: new when the first of those falls in the month. Location, sex, birth year and population
# type are the person's (kept in clear, erased or not, §13); the age is the one reached in the month's year.
# `paid` sums the month's issued amounts per currency; the service values them in USD.
FIVE_W_SQL = """
WITH activity AS (
    SELECT * FROM unnest(CAST(:programme_ids AS uuid[]), CAST(:activities AS int[])) AS a(programme_id, activity)
), reached AS (
    SELECT a.activity, min(e.issued_at) >= :month_start AS is_new,
           b.location_country AS country, b.location_admin1 AS admin1, b.location_admin2 AS admin2,
           b.population_type,
           CASE b.sex WHEN 'female' THEN 'women' WHEN 'male' THEN 'men' ELSE 'other' END AS sex,
           :year - b.birth_year < 18 AS under_18
      FROM entitlements e
      JOIN activity a ON a.programme_id = e.programme_id
      JOIN beneficiaries b ON b.id = e.beneficiary_id
     WHERE e.issued_at >= :year_start AND e.issued_at < :month_end
       AND (CAST(:country AS text) IS NULL OR b.location_country = :country)
     GROUP BY b.id, a.activity
    HAVING max(e.issued_at) >= :month_start
), counted AS (
    SELECT country, admin1, admin2, activity,
           count(*) AS total,
           count(*) FILTER (WHERE is_new) AS new,
           count(*) FILTER (WHERE is_new AND population_type = 'in_destination') AS in_destination,
           count(*) FILTER (WHERE is_new AND population_type = 'in_transit') AS in_transit,
           count(*) FILTER (WHERE is_new AND population_type = 'host_community') AS host_community,
           count(*) FILTER (WHERE is_new AND population_type = 'pendular') AS pendular,
           count(*) FILTER (WHERE is_new AND population_type = 'returnee') AS returnee,
           count(*) FILTER (WHERE is_new AND sex = 'women' AND under_18) AS women_under_18,
           count(*) FILTER (WHERE is_new AND sex = 'men' AND under_18) AS men_under_18,
           count(*) FILTER (WHERE is_new AND sex = 'women' AND NOT under_18) AS women_above_18,
           count(*) FILTER (WHERE is_new AND sex = 'men' AND NOT under_18) AS men_above_18,
           count(*) FILTER (WHERE is_new AND sex = 'other' AND under_18) AS other_under_18,
           count(*) FILTER (WHERE is_new AND sex = 'other' AND NOT under_18) AS other_above_18
      FROM reached
     GROUP BY country, admin1, admin2, activity
), paid AS (
    SELECT b.location_country AS country, b.location_admin1 AS admin1, b.location_admin2 AS admin2,
           a.activity, e.currency, sum(e.amount_minor) AS minor
      FROM entitlements e
      JOIN activity a ON a.programme_id = e.programme_id
      JOIN beneficiaries b ON b.id = e.beneficiary_id
     WHERE e.issued_at >= :month_start AND e.issued_at < :month_end
       AND (CAST(:country AS text) IS NULL OR b.location_country = :country)
     GROUP BY 1, 2, 3, 4, 5
), valued AS (
    SELECT country, admin1, admin2, activity,
           array_agg(currency ORDER BY currency) AS currencies, array_agg(minor ORDER BY currency) AS minors
      FROM paid
     GROUP BY country, admin1, admin2, activity
)
SELECT c.*, v.currencies, v.minors
  FROM counted c
  LEFT JOIN valued v ON v.activity = c.activity AND v.country = c.country
       AND v.admin1 IS NOT DISTINCT FROM c.admin1 AND v.admin2 IS NOT DISTINCT FROM c.admin2
"""


async def reporting_programmes(session: AsyncSession) -> Sequence[Any]:
    """Every programme with what the 5W says of it: its reporting identity, sector and delivery mechanism."""
    result = await session.execute(
        text(
            "SELECT id, sector, delivery_mechanism, appealing_organisation, implementing_partner, indicator,"
            " activity_name, activity_description, rmrp_activity FROM programmes ORDER BY id"
        )
    )
    return result.all()


async def five_w_rows(
    session: AsyncSession,
    *,
    programme_ids: Sequence[uuid.UUID],
    activities: Sequence[int],
    month_start: datetime,
    month_end: datetime,
    year_start: datetime,
    country: str | None,
) -> Sequence[Any]:
    result = await session.execute(
        text(FIVE_W_SQL),
        {
            "programme_ids": list(programme_ids),
            "activities": list(activities),
            "month_start": month_start,
            "month_end": month_end,
            "year_start": year_start,
            "year": year_start.year,
            "country": country,
        },
    )
    return result.all()
