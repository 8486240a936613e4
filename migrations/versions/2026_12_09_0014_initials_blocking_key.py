"""Every registered person is also filed under the initials blocking key (`i:`, see
cbi_service.dedup.blocking), computed here from the stored match profile exactly as the Python does.

Revision ID: 0014_initials_blocking_key
Revises: 0013_job_trace_context
Create Date: 2026-12-09 09:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014_initials_blocking_key"
down_revision: str | Sequence[str] | None = "0013_job_trace_context"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# 'i:' || the two initials in sorted order || ':' || yyyy || lower of (mm, dd) || higher of (mm, dd),
# hashed as key_hash() does. Profiles hold folded ASCII names and the ISO birth date ("b").
INITIALS_KEY = """
    'i:' || least(g, f) || greatest(g, f) || ':' || substr(b, 1, 4)
         || least(substr(b, 6, 2), substr(b, 9, 2)) || greatest(substr(b, 6, 2), substr(b, 9, 2))
"""


def upgrade() -> None:
    op.execute(
        f"""
        INSERT INTO dedup_keys (key, beneficiary_id)
        SELECT ('x' || encode(substring(sha256(convert_to({INITIALS_KEY}, 'UTF8')) for 8), 'hex'))::bit(64)::bigint,
               id
        FROM (
            SELECT id,
                   left(match_profile -> 'g' ->> 0, 1) COLLATE "C" AS g,
                   left(match_profile -> 'f' ->> 0, 1) COLLATE "C" AS f,
                   match_profile ->> 'b' AS b
            FROM beneficiaries
            WHERE match_profile -> 'g' ->> 0 <> '' AND match_profile -> 'f' ->> 0 <> ''
        ) AS people
        ON CONFLICT DO NOTHING
        """  # noqa: S608 (a constant expression, no input)
    )


def downgrade() -> None:
    """The extra keys only bring in candidates; leaving them costs nothing and cannot be undone selectively."""
