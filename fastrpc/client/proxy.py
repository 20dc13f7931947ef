"""Proxies: a service's methods as attributes, ``kv = client.proxy("KV"); kv.Get("a")``.

Owns: turning attribute access into calls through any caller (Client,
AsyncClient, the balancers, Go clients). With a ``typing.Protocol`` class
instead of a name, type checkers and IDEs see the service's signatures and
the proxy refuses methods the protocol does not declare.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, FrozenSet, Optional, TypeVar, overload

from fastrpc._core.calltable import Arguments

__all__ = ["Proxy", "Proxying", "service_of"]

T = TypeVar("T")


def service_of(protocol: type) -> str:
    """The service name a protocol class stands for: its ``__service__``
    attribute, else its name without a trailing "Protocol" (``KVProtocol`` -> ``KV``)."""
    name = getattr(protocol, "__service__", None)
    if name is None:
        name = protocol.__name__
        if name.endswith("Protocol") and len(name) > len("Protocol"):
            name = name[:-len("Protocol")]
    if not isinstance(name, str) or not name or "." in name:
        raise ValueError(f"invalid service name {name!r} for {protocol.__qualname__}")
    return name


def _declared_methods(protocol: type) -> FrozenSet[str]:
    """The public callables a protocol class declares (its own and its bases')."""
    names: set[str] = set()
    for cls in protocol.__mro__:
        if cls is object or cls.__module__ == "typing":
            continue
        names.update(name for name, value in vars(cls).items() if not name.startswith("_") and callable(value))
    return frozenset(names)


class Proxy:
    """The methods of one remote service, as attributes.

    ``proxy.Get("a", default=None)`` is ``caller.call("KV.Get", "a",
    default=None, **options)``: every argument, keyword ones included, goes
    to the handler (none is taken as a call option), and `options` (such as
    ``timeout``, or a balancer's ``key``) are those the proxy was made with.
    From an asyncio client or balancer the methods return coroutines. Made
    by ``proxy()`` on every client and balancer.
    """

    __slots__ = ("_caller", "_service", "_options", "_allowed", "_methods")

    def __init__(self, caller: Any, service: str, options: Dict[str, Any],
                 allowed: Optional[FrozenSet[str]] = None) -> None:
        self._caller = caller
        self._service = service
        self._options = options
        self._allowed = allowed
        self._methods: Dict[str, Callable[..., Any]] = {}

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        method = self._methods.get(name)
        if method is None:
            if self._allowed is not None and name not in self._allowed:
                raise AttributeError(f"{self._service} declares no method {name!r} "
                                     f"(it has: {', '.join(sorted(self._allowed)) or 'none'})")
            method = self._methods[name] = self._bind(f"{self._service}.{name}")
        return method

    def _bind(self, full_name: str) -> Callable[..., Any]:
        call = self._caller.call
        options = self._options

        def remote(*args: Any, **kwargs: Any) -> Any:
            if kwargs:
                # One Arguments: its keywords all go to the handler, even one named "timeout".
                return call(full_name, Arguments(*args, **kwargs), **options)
            return call(full_name, *args, **options)
        remote.__name__ = remote.__qualname__ = full_name
        return remote

    def with_options(self, **options: Any) -> "Proxy":
        """The same service, calling with other options (``timeout=``, ``key=``...)."""
        return Proxy(self._caller, self._service, {**self._options, **options}, self._allowed)

    def __dir__(self) -> Any:
        return sorted(set(object.__dir__(self)) | (self._allowed or set()))

    def __repr__(self) -> str:
        return f"<fastrpc proxy of {self._service} through {self._caller!r}>"


def make_proxy(caller: Any, service: Any, options: Dict[str, Any]) -> Any:
    """``caller.proxy(service, **options)``: by name (a str) or by protocol class."""
    if isinstance(service, str):
        if not service or "." in service:
            raise ValueError(f"invalid service name {service!r} (non-empty, no dots)")
        return Proxy(caller, service, options)
    if isinstance(service, type):
        return Proxy(caller, service_of(service), options, _declared_methods(service))
    raise TypeError(f"proxy() takes a service name or a Protocol class, not {type(service).__name__}")


class Proxying:
    """proxy(), describe() and services() of every client and balancer."""

    def describe(self, name: Optional[str] = None) -> Any:
        """What the server serves, from its reflection service: every service
        (or the one `name`, "Service" or "Service.Method") with its methods'
        parameters, return annotation, docstring and mode (a coroutine on
        asyncio clients and balancers)."""
        return self.call("_fastrpc.Describe", name)          # type: ignore[attr-defined]

    def services(self) -> Any:
        """The services the server serves, sorted (a coroutine on asyncio clients and balancers)."""
        return self.call("_fastrpc.Services")                # type: ignore[attr-defined]

    @overload
    def proxy(self, service: str, **options: Any) -> Proxy: ...

    @overload
    def proxy(self, service: Callable[..., T], **options: Any) -> T: ...

    def proxy(self, service: Any, **options: Any) -> Any:
        """The methods of `service` as attributes: ``kv = client.proxy("KV");
        kv.Get("a")`` calls ``KV.Get``.

        `service` is a name, or a ``typing.Protocol`` class that declares the
        methods (``client.proxy(KVProtocol)``: the service is "KV", or the
        class's ``__service__``), so that type checkers and IDEs see their
        signatures; declare them ``async def`` for asyncio clients and
        balancers. `options` are the call options every call carries
        (``timeout=``; a balancer's ``key=``, ``idempotent=``). Every
        argument of a proxy method goes to the handler, keywords included.
        """
        return make_proxy(self, service, options)
