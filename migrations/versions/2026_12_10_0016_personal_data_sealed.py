"""Personal data sealed at rest (§13): key versions, people's data under keys of their own, keyed blocking
keys and reference digests, sealed idempotency responses and import files, audit summaries without
references, the `erased` status.

Existing rows are sealed in place with the configured master key (`CBI_MASTER_KEY`, a key file, or in
development the data folder's), then the clear columns are dropped; the blocking keys are computed again,
keyed, from each person's profile. The downgrade opens them again with the same key (a database that
holds erased people cannot go back: their data no longer exists).

Revision ID: 0016_personal_data_sealed
Revises: 0015_dedup_models_and_sweeps
Create Date: 2026-12-10 09:00:00
"""

import json
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from cbi_service.beneficiaries.personal import Personal, external_ref_index, open_personal, profile_dict
from cbi_service.beneficiaries.repository import chunk_aad
from cbi_service.dedup.blocking import blocking_keys, key_hash
from cbi_service.dedup.normalize import MatchRecord
from cbi_service.kit.crypto import Keyring, load_keyring_sync, master_key
from cbi_service.kit.idempotency import response_aad
from cbi_service.kit.settings import get_settings

revision: str = "0016_personal_data_sealed"
down_revision: str | Sequence[str] | None = "0015_dedup_models_and_sweeps"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 2000
SEALED_CHECK = (
    "(status = 'erased') = (personal IS NULL) AND (personal IS NULL) = (data_key IS NULL)"
    " AND (personal IS NULL) = (key_version IS NULL) AND (personal IS NULL) = (profile IS NULL)"
)
OLD_STATUSES = "status IN ('active', 'pending_adjudication', 'duplicate', 'inactive')"
NEW_STATUSES = "status IN ('active', 'pending_adjudication', 'duplicate', 'inactive', 'erased')"


def _has_rows(bind: sa.Connection, table: str) -> bool:
    return bool(bind.execute(sa.text(f"SELECT EXISTS (SELECT 1 FROM {table})")).scalar_one())  # noqa: S608 - our names


def _keyring(bind: sa.Connection) -> Keyring:
    return load_keyring_sync(bind, master_key(get_settings()))


def upgrade() -> None:
    op.create_table(
        "crypto_keys",
        sa.Column("version", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("purpose", sa.String(length=10), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("purpose IN ('records', 'index')", name=op.f("ck_crypto_keys_purpose")),
        sa.CheckConstraint("status IN ('active', 'retiring')", name=op.f("ck_crypto_keys_status")),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_crypto_keys")),
    )
    op.create_index(
        "uq_crypto_keys_active", "crypto_keys", ["purpose"], unique=True, postgresql_where=sa.text("status = 'active'")
    )
    op.create_table(
        "key_rotations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=10), server_default="running", nullable=False),
        sa.Column("to_version", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("status IN ('running', 'completed')", name=op.f("ck_key_rotations_status")),
        sa.ForeignKeyConstraint(
            ["to_version"], ["crypto_keys.version"], name=op.f("fk_key_rotations_to_version_crypto_keys")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_key_rotations")),
    )
    op.create_index(
        "uq_key_rotations_running",
        "key_rotations",
        ["status"],
        unique=True,
        postgresql_where=sa.text("status = 'running'"),
    )
    for column in (
        sa.Column("birth_year", sa.SmallInteger(), nullable=True),
        sa.Column("key_version", sa.Integer(), nullable=True),
        sa.Column("data_key", sa.LargeBinary(), nullable=True),
        sa.Column("personal", sa.LargeBinary(), nullable=True),
        sa.Column("profile", sa.LargeBinary(), nullable=True),
        sa.Column("external_ref_index", sa.LargeBinary(), nullable=True),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True),
    ):
        op.add_column("beneficiaries", column)
    op.add_column("beneficiary_import_chunks", sa.Column("key_version", sa.Integer(), nullable=True))
    op.add_column("idempotency_keys", sa.Column("key_version", sa.Integer(), nullable=True))
    op.add_column("idempotency_keys", sa.Column("response_sealed", sa.LargeBinary(), nullable=True))
    op.add_column("idempotency_keys", sa.Column("subject_id", sa.Uuid(), nullable=True))

    bind = op.get_bind()
    if any(_has_rows(bind, t) for t in ("beneficiaries", "beneficiary_import_chunks", "idempotency_keys")):
        ring = _keyring(bind)
        _seal_beneficiaries(bind, ring)
        _seal_chunks(bind, ring)
        _seal_responses(bind, ring)
    # The one change the append-only trail accepts: references to people taken out of past summaries,
    # by this migration alone (the trigger is off only inside its transaction).
    op.execute("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only")
    op.execute("UPDATE audit_events SET before = before - 'external_ref' WHERE before ? 'external_ref'")
    op.execute("UPDATE audit_events SET after = after - 'external_ref' WHERE after ? 'external_ref'")
    op.execute("ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only")

    op.alter_column("beneficiaries", "birth_year", nullable=False)
    op.alter_column("beneficiary_import_chunks", "key_version", nullable=False)
    op.alter_column("idempotency_keys", "key_version", nullable=False)
    op.alter_column("idempotency_keys", "response_sealed", nullable=False)
    op.drop_index("ix_beneficiaries_external_ref", table_name="beneficiaries")
    for name in ("given_names", "family_names", "date_of_birth", "phone", "external_ref", "documents", "match_profile"):
        op.drop_column("beneficiaries", name)
    op.drop_column("idempotency_keys", "response_body")
    op.drop_constraint(op.f("ck_beneficiaries_status"), "beneficiaries", type_="check")
    op.create_check_constraint("status", "beneficiaries", NEW_STATUSES)
    op.create_check_constraint("birth_year", "beneficiaries", "birth_year BETWEEN 1900 AND 2200")
    op.create_check_constraint("sealed_unless_erased", "beneficiaries", SEALED_CHECK)
    op.create_foreign_key(
        op.f("fk_beneficiaries_key_version_crypto_keys"), "beneficiaries", "crypto_keys", ["key_version"], ["version"]
    )
    op.create_foreign_key(
        op.f("fk_beneficiary_import_chunks_key_version_crypto_keys"),
        "beneficiary_import_chunks",
        "crypto_keys",
        ["key_version"],
        ["version"],
    )
    op.create_foreign_key(
        op.f("fk_idempotency_keys_key_version_crypto_keys"),
        "idempotency_keys",
        "crypto_keys",
        ["key_version"],
        ["version"],
    )
    op.create_index("ix_beneficiaries_key_version", "beneficiaries", ["key_version", "id"])
    op.create_index(
        "ix_beneficiaries_external_ref_index",
        "beneficiaries",
        ["external_ref_index"],
        postgresql_where=sa.text("external_ref_index IS NOT NULL"),
    )
    op.create_index(op.f("ix_beneficiary_import_chunks_key_version"), "beneficiary_import_chunks", ["key_version"])
    op.create_index(op.f("ix_idempotency_keys_key_version"), "idempotency_keys", ["key_version"])
    op.create_index(op.f("ix_idempotency_keys_subject_id"), "idempotency_keys", ["subject_id"])


def _seal_beneficiaries(bind: sa.Connection, ring: Keyring) -> None:
    """Seal every person's data under a key of their own, and file those with blocking keys again, keyed."""
    filed = {row[0] for row in bind.execute(sa.text("SELECT DISTINCT beneficiary_id FROM dedup_keys"))}
    bind.execute(sa.text("DELETE FROM dedup_keys"))
    after = uuid.UUID(int=0)
    while True:
        rows = bind.execute(
            sa.text(
                "SELECT id, given_names, family_names, date_of_birth, phone, external_ref, documents, match_profile"
                " FROM beneficiaries WHERE id > :after ORDER BY id LIMIT :n"
            ),
            {"after": after, "n": BATCH},
        ).all()
        if not rows:
            return
        updates: list[dict[str, Any]] = []
        keys: list[dict[str, Any]] = []
        for row in rows:
            personal = Personal(
                row.given_names, row.family_names, row.date_of_birth, row.phone, row.external_ref, row.documents
            )
            record = MatchRecord.from_profile(row.match_profile)
            profile = json.dumps(row.match_profile, separators=(",", ":"), ensure_ascii=False).encode()
            sealed = ring.seal_subject(
                row.id, {"personal": personal.to_bytes(), "profile": profile}, ring.active_version
            )
            updates.append(
                {
                    "b_id": row.id,
                    "birth_year": row.date_of_birth.year,
                    "key_version": sealed.version,
                    "data_key": sealed.data_key,
                    "personal": sealed.fields["personal"],
                    "profile": sealed.fields["profile"],
                    "external_ref_index": external_ref_index(ring, row.external_ref),
                }
            )
            if row.id in filed:
                hashes = dict.fromkeys(ring.key_hash(k) for k in blocking_keys(record))
                keys.extend({"key": h, "beneficiary_id": row.id} for h in hashes)
        bind.execute(
            sa.text(
                "UPDATE beneficiaries SET birth_year = :birth_year, key_version = :key_version, data_key = :data_key,"
                " personal = :personal, profile = :profile, external_ref_index = :external_ref_index WHERE id = :b_id"
            ),
            updates,
        )
        if keys:
            bind.execute(sa.text("INSERT INTO dedup_keys (key, beneficiary_id) VALUES (:key, :beneficiary_id)"), keys)
        after = rows[-1].id


def _seal_chunks(bind: sa.Connection, ring: Keyring) -> None:
    version = ring.active_version
    for row in bind.execute(sa.text("SELECT import_id, seq, data FROM beneficiary_import_chunks")).all():
        bind.execute(
            sa.text(
                "UPDATE beneficiary_import_chunks SET key_version = :v, data = :d WHERE import_id = :i AND seq = :s"
            ),
            {
                "v": version,
                "d": ring.seal(version, bytes(row.data), chunk_aad(row.import_id, row.seq)),
                "i": row.import_id,
                "s": row.seq,
            },
        )


def _seal_responses(bind: sa.Connection, ring: Keyring) -> None:
    version = ring.active_version
    for row in bind.execute(sa.text("SELECT principal_id, key, response_body FROM idempotency_keys")).all():
        sealed = ring.seal(version, row.response_body.encode(), response_aad(row.principal_id, row.key))
        bind.execute(
            sa.text(
                "UPDATE idempotency_keys SET key_version = :v, response_sealed = :r WHERE principal_id = :p AND key = :k"
            ),
            {"v": version, "r": sealed, "p": row.principal_id, "k": row.key},
        )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.execute(sa.text("SELECT EXISTS (SELECT 1 FROM beneficiaries WHERE status = 'erased')")).scalar_one():
        raise RuntimeError("erased people's data no longer exists: this database cannot go back before 0016")
    for column in (
        sa.Column("given_names", sa.String(length=200), nullable=True),
        sa.Column("family_names", sa.String(length=200), nullable=True),
        sa.Column("date_of_birth", sa.Date(), nullable=True),
        sa.Column("phone", sa.String(length=20), nullable=True),
        sa.Column("external_ref", sa.String(length=100), nullable=True),
        sa.Column("documents", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("match_profile", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    ):
        op.add_column("beneficiaries", column)
    op.add_column("idempotency_keys", sa.Column("response_body", sa.Text(), nullable=True))
    if any(_has_rows(bind, t) for t in ("beneficiaries", "beneficiary_import_chunks", "idempotency_keys")):
        ring = _keyring(bind)
        _open_beneficiaries(bind, ring)
        for row in bind.execute(
            sa.text("SELECT import_id, seq, key_version, data FROM beneficiary_import_chunks")
        ).all():
            data = ring.open(row.key_version, bytes(row.data), chunk_aad(row.import_id, row.seq))
            bind.execute(
                sa.text("UPDATE beneficiary_import_chunks SET data = :d WHERE import_id = :i AND seq = :s"),
                {"d": data, "i": row.import_id, "s": row.seq},
            )
        for row in bind.execute(
            sa.text("SELECT principal_id, key, key_version, response_sealed FROM idempotency_keys")
        ).all():
            body = ring.open(row.key_version, bytes(row.response_sealed), response_aad(row.principal_id, row.key))
            bind.execute(
                sa.text("UPDATE idempotency_keys SET response_body = :b WHERE principal_id = :p AND key = :k"),
                {"b": body.decode(), "p": row.principal_id, "k": row.key},
            )
    for name in ("given_names", "family_names", "date_of_birth", "documents", "match_profile"):
        op.alter_column("beneficiaries", name, nullable=False)
    op.alter_column("idempotency_keys", "response_body", nullable=False)
    op.drop_index(op.f("ix_idempotency_keys_subject_id"), table_name="idempotency_keys")
    op.drop_index(op.f("ix_idempotency_keys_key_version"), table_name="idempotency_keys")
    op.drop_index(op.f("ix_beneficiary_import_chunks_key_version"), table_name="beneficiary_import_chunks")
    op.drop_index("ix_beneficiaries_external_ref_index", table_name="beneficiaries")
    op.drop_index("ix_beneficiaries_key_version", table_name="beneficiaries")
    op.drop_constraint(op.f("ck_beneficiaries_sealed_unless_erased"), "beneficiaries", type_="check")
    op.drop_constraint(op.f("ck_beneficiaries_birth_year"), "beneficiaries", type_="check")
    op.drop_constraint(op.f("ck_beneficiaries_status"), "beneficiaries", type_="check")
    op.create_check_constraint("status", "beneficiaries", OLD_STATUSES)
    for name in ("birth_year", "key_version", "data_key", "personal", "profile", "external_ref_index", "erased_at"):
        op.drop_column("beneficiaries", name)
    op.drop_column("beneficiary_import_chunks", "key_version")
    for name in ("key_version", "response_sealed", "subject_id"):
        op.drop_column("idempotency_keys", name)
    op.create_index(
        "ix_beneficiaries_external_ref",
        "beneficiaries",
        ["external_ref"],
        postgresql_where=sa.text("external_ref IS NOT NULL"),
    )
    op.drop_index("uq_key_rotations_running", table_name="key_rotations")
    op.drop_table("key_rotations")
    op.drop_index("uq_crypto_keys_active", table_name="crypto_keys")
    op.drop_table("crypto_keys")


def _open_beneficiaries(bind: sa.Connection, ring: Keyring) -> None:
    """Every person's data back in clear, and their blocking keys hashed as before 0016."""
    filed = {row[0] for row in bind.execute(sa.text("SELECT DISTINCT beneficiary_id FROM dedup_keys"))}
    bind.execute(sa.text("DELETE FROM dedup_keys"))
    rows = bind.execute(sa.text("SELECT id, key_version, data_key, personal, profile FROM beneficiaries")).all()
    for row in rows:
        personal = open_personal(ring, row.id, row.key_version, bytes(row.data_key), bytes(row.personal))
        profile = profile_dict(ring, row.id, row.key_version, bytes(row.data_key), bytes(row.profile))
        bind.execute(
            sa.text(
                "UPDATE beneficiaries SET given_names = :g, family_names = :f, date_of_birth = :d, phone = :p,"
                " external_ref = :e, documents = CAST(:docs AS jsonb), match_profile = CAST(:m AS jsonb) WHERE id = :id"
            ),
            {
                "g": personal.given_names,
                "f": personal.family_names,
                "d": personal.date_of_birth,
                "p": personal.phone,
                "e": personal.external_ref,
                "docs": json.dumps(personal.documents),
                "m": json.dumps(profile),
                "id": row.id,
            },
        )
        if row.id in filed:
            for k in dict.fromkeys(key_hash(k) for k in blocking_keys(MatchRecord.from_profile(profile))):
                bind.execute(
                    sa.text("INSERT INTO dedup_keys (key, beneficiary_id) VALUES (:k, :b)"), {"k": k, "b": row.id}
                )
