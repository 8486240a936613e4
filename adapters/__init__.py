"""Integrations with the outside world: provider adapters, registry adapters and the provider simulator.

Independent of `cbi_service` so that third-party adapters and the simulator can be used on their own.
"""
