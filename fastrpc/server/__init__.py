"""The server: registered services, listeners, connections, dispatch and graceful close."""
from fastrpc.server.handlers import blocking
from fastrpc.server.server import Server

__all__ = ["Server", "blocking"]
