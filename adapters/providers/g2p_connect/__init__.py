"""G2P Connect Disburse: the `g2p_connect` adapter, its messages and their signatures (see `adapter`)."""

from adapters.providers.g2p_connect.adapter import G2PConnectAdapter, G2PConnectConfig

__all__ = ["G2PConnectAdapter", "G2PConnectConfig"]
