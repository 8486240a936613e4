from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, String, Text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from cbi_service.kit.ids import new_id
from cbi_service.kit.models import Base, CreatedAt


class ApiKey(CreatedAt, Base):
    """A machine client's credential; only the SHA-256 of the key is kept."""

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint("cardinality(roles) >= 1", name="has_role"),
        CheckConstraint(
            "roles <@ ARRAY['admin','registrar','programme_officer','approver','finance','auditor']::text[]",
            name="known_roles",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    roles: Mapped[list[str]] = mapped_column(ARRAY(Text))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
