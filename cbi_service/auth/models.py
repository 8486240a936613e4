from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, String, Text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from cbi_service.kit.ids import new_id
from cbi_service.kit.models import Base, CreatedAt

KNOWN_ROLES = (
    "roles <@ ARRAY['admin','registrar','programme_officer','approver','finance','auditor','merchant']::text[]"
)
MERCHANT_KEY = (
    "(merchant_id IS NOT NULL) = ('merchant' = ANY (roles)) AND (merchant_id IS NULL OR cardinality(roles) = 1)"
)
"""A merchant's key is bound to its merchant and holds the `merchant` role alone, so it reaches merchant routes
only; no other key names a merchant."""


class ApiKey(CreatedAt, Base):
    """A machine client's credential; only the SHA-256 of the key is kept."""

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint("cardinality(roles) >= 1", name="has_role"),
        CheckConstraint(KNOWN_ROLES, name="known_roles"),
        CheckConstraint(MERCHANT_KEY, name="merchant_key"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    roles: Mapped[list[str]] = mapped_column(ARRAY(Text))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    merchant_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("merchants.id"))
