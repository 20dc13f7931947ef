"""The settings clients and balancers take, as types: what ``**settings`` may hold.

Owns: one TypedDict per family of keyword settings, so that type checkers
reject a misspelled or mistyped setting (``Client(addr, timout=1)``) as they
would a wrong parameter. The checks and defaults themselves live where the
settings are used (ClientSettings, BalancerCore._configure); a test keeps the
names here equal to theirs.
"""
from __future__ import annotations

import ssl as _ssl
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Sequence, Tuple, TypedDict, Union

if TYPE_CHECKING:
    from fastrpc.balancer.plan import RetryBudget
    from fastrpc.balancer.strategies import Strategy
    from fastrpc.balancer.subset import Aperture
    from fastrpc.discovery.base import Discovery

__all__ = ["ClientOptions", "BalancingOptions", "BalancerOptions"]


class ClientOptions(TypedDict, total=False):
    """Settings of Client and AsyncClient (and of a balancer's connections);
    see ClientSettings for what each does and its default."""
    timeout: Optional[float]
    connect_timeout: float
    max_frame_size: int
    max_depth: int
    max_len: int
    max_bytes: int
    bytes_views: bool
    send_deadline: bool
    ssl: Optional[_ssl.SSLContext]
    server_hostname: Optional[str]
    auth_secret: Union[bytes, str, None]
    metadata: Union[Dict[str, Any], Callable[[], Dict[str, Any]], None]
    heartbeat: Optional[float]
    heartbeat_timeout: Optional[float]
    reconnect_backoff: Tuple[float, float]
    default: Optional[Callable[[Any], Any]]
    ext_hook: Optional[Callable[[int, bytes], Any]]
    keep_tuples: bool
    interceptors: Sequence[Callable[[Any, Callable[[Any], Any]], Any]]


class BalancingOptions(TypedDict, total=False):
    """Settings of Balancer and AsyncBalancer that configure balancing; see
    Balancer for what each does and its default."""
    strategy: Union[str, "Strategy"]
    origin: Optional[Tuple[float, float]]
    origin_zone: Optional[str]
    failure: str
    max_attempts: int
    retry_budget: Optional["RetryBudget"]
    idempotent: bool
    backup_after: float
    health_interval: float
    health_timeout: float
    health_misses: int
    health_method: Optional[str]
    eject_failures: int
    eject_base: float
    eject_max: float
    max_ejected: float
    slow_start: float
    ewma_tau: float
    seed: Optional[int]
    discovery: Optional["Discovery"]
    service: Optional[str]
    subset: Optional["Aperture"]


class BalancerOptions(ClientOptions, BalancingOptions, total=False):
    """Everything a balancer takes: balancing, its connections' settings, and
    the protocol they speak."""
    codec: str
