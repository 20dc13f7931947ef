"""fastrpc's compiled core: the loops over bytes and arrays, nothing above them.

    buffer      the write buffer framing and codec share (+ byte order helpers)
    codec       MessagePack encode/decode, numpy arrays as an ext type
    frame       the 16-byte frame header, FrameReader, frame writers
    calltable   a client connection's calls in flight: seqs, encoding, replies, futures
    balance     a balancer's call path: pick, send, account for the reply
    servercore  a server connection's hot loop: frames in, inline handlers, replies out
    select      per-endpoint state arrays and the balancers' selection kernels

Each .pxd is the module's compiled contract. select (and fastrpc.go._gob)
are Cython pure-Python mode: the same .py runs uncompiled as the reference
implementation the tests compare against. The package refuses to import
when any of them is not the compiled extension: there is no silent
pure-Python fallback.
"""
from importlib.machinery import EXTENSION_SUFFIXES
from types import ModuleType

from fastrpc._core import balance, buffer, calltable, codec, frame, select, servercore

__all__ = ["balance", "buffer", "calltable", "codec", "frame", "require_compiled", "select", "servercore"]


def require_compiled(*modules: ModuleType) -> None:
    """Raise ImportError unless every module is a compiled extension module."""
    for module in modules:
        if not (module.__file__ or "").endswith(tuple(EXTENSION_SUFFIXES)):
            raise ImportError(f"{module.__name__} is not compiled ({module.__file__}): install fastrpc "
                              "with `pip install .` so its Cython extensions are built")


require_compiled(balance, buffer, calltable, codec, frame, select, servercore)
