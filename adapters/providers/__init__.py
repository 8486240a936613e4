"""Provider adapters: the interface, the built-in HTTP adapters and the registry that picks one."""

from adapters.providers.base import (
    CancelOutcome,
    DeliveryMechanism,
    EventType,
    InstructionStatus,
    IssueInstruction,
    IssueOutcome,
    MalformedEvent,
    PermanentProviderError,
    ProviderAdapter,
    ProviderConfigError,
    ProviderError,
    ProviderEvent,
    StatusOutcome,
    TransientProviderError,
)
from adapters.providers.registry import (
    ENTRY_POINT_GROUP,
    available_adapters,
    build_provider,
    build_providers,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "CancelOutcome",
    "DeliveryMechanism",
    "EventType",
    "InstructionStatus",
    "IssueInstruction",
    "IssueOutcome",
    "MalformedEvent",
    "PermanentProviderError",
    "ProviderAdapter",
    "ProviderConfigError",
    "ProviderError",
    "ProviderEvent",
    "StatusOutcome",
    "TransientProviderError",
    "available_adapters",
    "build_provider",
    "build_providers",
]
