"""Imports every domain's models so `Base.metadata` describes the whole schema (for Alembic autogenerate)."""

from cbi_service.audit import models as audit_models
from cbi_service.auth import models as auth_models
from cbi_service.batches import models as batch_models
from cbi_service.beneficiaries import models as beneficiary_models
from cbi_service.dedup import models as dedup_models
from cbi_service.entitlements import models as entitlement_models
from cbi_service.fx import models as fx_models
from cbi_service.jobs import models as job_models
from cbi_service.keys import models as key_models
from cbi_service.kit import crypto, idempotency
from cbi_service.kit.models import Base
from cbi_service.merchants import models as merchant_models
from cbi_service.programmes import models as programme_models
from cbi_service.reconciliation import models as reconciliation_models
from cbi_service.redemptions import models as redemption_models
from cbi_service.settlements import models as settlement_models
from cbi_service.webhooks import models as webhook_models

__all__ = [
    "Base",
    "audit_models",
    "auth_models",
    "batch_models",
    "beneficiary_models",
    "crypto",
    "dedup_models",
    "entitlement_models",
    "fx_models",
    "idempotency",
    "job_models",
    "key_models",
    "merchant_models",
    "programme_models",
    "reconciliation_models",
    "redemption_models",
    "settlement_models",
    "webhook_models",
]
