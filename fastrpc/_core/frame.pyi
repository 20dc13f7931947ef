# Types of the compiled module fastrpc._core.frame (frame.pyx).
from typing import Any, Dict, List, Optional

DEFAULT_MAX_FRAME_SIZE: int
INITIAL_BUFFER: int
DEFAULT_CHUNK: int
MIN_READ: int
REQUEST: int
RESPONSE: int
ERROR: int
NOTIFY: int
PING: int
PONG: int
CANCEL: int
GOAWAY: int
ITEM: int
END: int
CREDIT: int
KIND_NAMES: Dict[int, str]
DEADLINE: int
LOAD: int
META: int
STREAM: int

def encode_frame(kind: int, seq: int, method: str = "", payload: bytes = b"", *,
                 deadline_ms: Optional[int] = None, load: Optional[int] = None,
                 meta: Optional[bytes] = None, stream: bool = False) -> bytes: ...

class Frame:
    @property
    def kind(self) -> int: ...
    @property
    def flags(self) -> int: ...
    @property
    def seq(self) -> int: ...
    @property
    def method(self) -> str: ...
    @property
    def deadline_ms(self) -> Optional[int]: ...
    @property
    def load(self) -> Optional[int]: ...
    @property
    def meta(self) -> Optional[bytes]: ...
    @property
    def payload(self) -> bytes: ...

class FrameReader:
    @property
    def max_frame_size(self) -> int: ...
    skip_oversized: bool
    def __init__(self, max_frame_size: int = ..., chunk: int = ...) -> None: ...
    def get_buffer(self, sizehint: int = -1) -> memoryview: ...
    def buffer_updated(self, nbytes: int) -> None: ...
    @property
    def buffered(self) -> int: ...
    @property
    def capacity(self) -> int: ...
    def frames(self) -> List[Frame]: ...
    def feed(self, data: Any) -> List[Frame]: ...
