# Types of the compiled module fastrpc._core.balance (balance.pyx). The
# members the Python layers use are typed; the rest fall back to Any.
from typing import Any, List, Optional, Tuple, Union

from fastrpc._core.calltable import CallFuture, CallSettings, ClientStats, Slot
from fastrpc._core.select import EndpointTable
from fastrpc.net.endpoint import Endpoint

def is_answer(exc: BaseException) -> bool: ...
def scatter(results: List[Any], positions: List[int], values: List[Any]) -> None: ...
def gather(items: List[Any], positions: List[int]) -> List[Any]: ...
def new_attempt(pool: "Pool", sink: Any, method: str, args: Any, key_hash: int, deadline: float,
                deadline_ms: Optional[int], meta: Optional[bytes], idempotent: bool) -> "Attempt": ...

class Member:
    endpoint: Endpoint
    index: int
    client: Any
    conn: Any
    dial_lock: Any
    active: int
    calls: int
    errors: int
    remote_errors: int
    failures: int
    last_answer: float
    last_error: Optional[str]
    removed: bool
    healthy: bool
    misses: int
    ejected_until: float
    times_ejected: int
    ejections: int
    eject_refused: bool
    ramp_from: Optional[float]
    rtt_seconds: float
    def __init__(self, endpoint: Endpoint, ramp_from: Optional[float] = None) -> None: ...
    def histogram(self) -> List[int]: ...

class Pool:
    table: EndpointTable
    picker: Any
    members: List[Member]
    keyed: bool
    started: int
    next_check: float
    policy: Any
    lock: Any
    closed: bool
    engine: Any
    idempotent: bool
    hedge_after: float
    stats: ClientStats
    settings: CallSettings
    start_health: bool
    loop: Any
    def __init__(self, policy: Any, lock: Any) -> None: ...
    def install(self, table: EndpointTable, picker: Any, members: List[Member], keyed: bool) -> None: ...
    def pick(self, key_hash: int) -> Member: ...
    def begin(self, m: Member) -> None: ...
    def assign(self, positions: List[int], key_hashes: Any) -> List[Tuple[Member, List[int]]]: ...
    def key_hash_for(self, key: Any) -> int: ...
    def release_withdrawn(self, m: Member) -> None: ...
    def release_answered_many(self, m: Member, count: int, remote: int, rtt: float,
                              load: int = -1) -> None: ...
    def send(self, a: "Attempt", conn: Any) -> None: ...
    def go(self, settings: CallSettings, method: str, args: Any, key: Any, timeout: Optional[float],
           idempotent: Optional[bool], meta: Optional[bytes] = None, observer: Any = None) -> CallFuture: ...
    def go_async(self, loop: Any, settings: CallSettings, method: str, args: Any, key: Any,
                 timeout: Optional[float], idempotent: Optional[bool],
                 driver: Any, meta: Optional[bytes] = None,
                 observer: Any = None) -> Tuple[Any, "Attempt", bool, Optional[List[Any]]]: ...
    def start(self, a: "Attempt") -> bool: ...
    def __getattr__(self, name: str) -> Any: ...

class Attempt(Slot):
    pool: Pool
    member: Member                     # picked before it is sent
    sink: Any
    conn: Any
    seq: int
    started: float
    running: bool
    method: str
    args: Any
    key_hash: int
    deadline: float
    deadline_ms: Optional[int]
    meta: Optional[bytes]
    idempotent: bool
    number: int
    tried: Optional[List[Tuple[Member, BaseException]]]
    peers: Optional[List["Attempt"]]
    head: "Attempt"                    # the call's first attempt (None on that one itself)
    current: "Attempt"
    observer: Any                      # None, or told of each attempt (fastrpc.ClientCall.attempts)
    answered_by: Optional[Member]      # on the first attempt: the endpoint that answered
    answered_number: int
    def hedge_check(self) -> None: ...
    def fail(self, error: BaseException) -> None: ...
    def succeed(self, value: Any) -> None: ...
    def end_call(self) -> int: ...
    def follow_up(self) -> "Attempt": ...
    def keep_in_view(self) -> None: ...
    def __getattr__(self, name: str) -> Any: ...

Key = Union[str, bytes, int, None]

# The balancers' public call methods (Balancer.go, Balancer.call, AsyncBalancer.call).
def balancer_go(self: Any, method: str, *args: Any, key: Key = None, timeout: Optional[float] = None,
                idempotent: Optional[bool] = None, **kwargs: Any) -> CallFuture: ...
def balancer_call(self: Any, method: str, *args: Any, key: Key = None, timeout: Optional[float] = None,
                  idempotent: Optional[bool] = None, **kwargs: Any) -> Any: ...
async def async_balancer_call(self: Any, method: str, *args: Any, key: Key = None,
                              timeout: Optional[float] = None, idempotent: Optional[bool] = None,
                              **kwargs: Any) -> Any: ...
