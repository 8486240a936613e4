"""One SQL statement (one snapshot) computing every figure of the people-reached report."""

from __future__ import annotations

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
