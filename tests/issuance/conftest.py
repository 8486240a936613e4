from tests.issuance.fixtures import settings, simulator, simulator_process

__all__ = ["settings", "simulator", "simulator_process"]
