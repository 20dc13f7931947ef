"""fastrpc: fast RPC in the style of Go's net/rpc, with client-side load balancing."""
from fastrpc import _codec
from fastrpc._codec import ExtType, packb, unpackb
from fastrpc.errors import RemoteError

# The compiled modules are required; importing them above fails loudly when
# the extensions were not built, there is no pure-Python fallback.
backend = "cython"

__all__ = ["ExtType", "RemoteError", "backend", "packb", "unpackb"]
