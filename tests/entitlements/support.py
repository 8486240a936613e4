"""Shared by the entitlement tests: drive a service function in its own unit of work."""

from __future__ import annotations


async def in_transaction(session_factory, fn, *args, **kwargs):
    """Call `fn(session, ...)` in one committed transaction, as the worker and the webhook inbox do."""
    async with session_factory.begin() as session:
        return await fn(session, *args, **kwargs)
