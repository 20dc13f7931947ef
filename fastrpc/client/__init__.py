"""Clients of one server: Client (blocking, thread-safe) and AsyncClient (asyncio)."""
from fastrpc.client.aio import AsyncClient
from fastrpc.client.sync import CallFuture, Client

__all__ = ["AsyncClient", "CallFuture", "Client"]
