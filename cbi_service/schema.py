"""Imports every domain's models so `Base.metadata` describes the whole schema (for Alembic autogenerate)."""

from cbi_service.audit import models as audit_models
from cbi_service.auth import models as auth_models
from cbi_service.jobs import models as job_models
from cbi_service.kit import idempotency
from cbi_service.kit.models import Base
from cbi_service.programmes import models as programme_models

__all__ = ["Base", "audit_models", "auth_models", "idempotency", "job_models", "programme_models"]
