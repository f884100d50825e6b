"""Python client for the Pier ingestion API (the Parcelvoy Client API).

``Client`` (threads) and ``AsyncClient`` (asyncio) send identify/alias/devices requests right
away and batch tracked events in the background. See docs/python-client.md.
"""

from ._async import AsyncClient
from ._retry import RetryPolicy
from ._sync import Client
from ._wire import CLEAR
from .errors import PierError, QueueFullError

__all__ = ["CLEAR", "AsyncClient", "Client", "PierError", "QueueFullError", "RetryPolicy"]
