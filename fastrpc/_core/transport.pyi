# Types of the compiled module fastrpc._core.transport (transport.pyx).
from typing import Any, List, Optional, Tuple

class ConnectionIO:
    """The socket, call table and write bookkeeping of a blocking connection."""
    address: str
    sock: Any
    table: Any
    fd: int
    tls: bool
    sent: int
    @property
    def writes(self) -> List[Tuple[int, int, int]]: ...
    error: Optional[BaseException]
    @property
    def last_io(self) -> float: ...
    def start_io(self) -> None: ...
    def flush(self) -> None: ...
    def on_readable(self) -> None: ...
