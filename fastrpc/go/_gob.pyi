# Types of the compiled module fastrpc.go._gob (_gob.py, Cython pure-Python
# mode): Go's gob encoding. Internals fall back to Any.
from typing import Any, Optional

from fastrpc.errors import DecodeError

K_BOOL: int
K_INT: int
K_UINT: int
K_FLOAT: int
K_BYTES: int
K_STRING: int
K_COMPLEX: int
K_INTERFACE: int
K_STRUCT: int
K_SLICE: int
K_ARRAY: int
K_MAP: int
K_OPAQUE: int
FIRST_USER_ID: int
DEFAULT_MAX_MESSAGE: int
DEFAULT_MAX_DEPTH: int

class GobError(DecodeError): ...

class GoType:
    kind: int
    name: str
    def __init__(self, kind: int, name: str, *args: Any, builtin_id: int = 0, **fields: Any) -> None: ...
    def __getattr__(self, name: str) -> Any: ...
    def __setattr__(self, name: str, value: Any) -> None: ...

BOOL: GoType
INT: GoType
UINT: GoType
FLOAT: GoType
BYTES: GoType
STRING: GoType
COMPLEX: GoType
INTERFACE: GoType

class GobEncoder:
    def __init__(self, *args: Any, **kwargs: Any) -> None: ...
    def encode(self, value: Any, gotype: Optional[GoType] = None) -> None: ...
    def __getattr__(self, name: str) -> Any: ...

class GobDecoder:
    def __init__(self, *args: Any, **kwargs: Any) -> None: ...
    def __getattr__(self, name: str) -> Any: ...
