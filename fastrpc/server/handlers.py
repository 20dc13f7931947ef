"""Turning registered objects into a dispatch table of Handlers.

Public methods (names not starting with "_") of a registered object become
"Service.Method"; how each runs (inline, as a task, in the thread pool) and
how many positional arguments it takes are decided here, once.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Optional, Tuple

from fastrpc._core.servercore import MODE_ASYNC, MODE_BLOCKING, MODE_INLINE, Handler

__all__ = ["blocking", "build_handler", "public_methods"]

_BLOCKING_ATTR = "__fastrpc_blocking__"


def blocking(func: Callable) -> Callable:
    """Mark a handler as blocking: the server runs it in its thread pool.

    Use it for handlers that sleep, do file or network I/O, or hold the GIL
    only briefly (numpy, hashing), so they do not stall other calls.
    """
    setattr(func, _BLOCKING_ATTR, True)
    return func


def _arity(func: Callable, name: str) -> Tuple[int, int]:
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return 0, -1          # builtins without a signature: let the call decide
    min_args = max_args = 0
    for param in sig.parameters.values():
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            max_args += 1
            if param.default is param.empty:
                min_args += 1
        elif param.kind is param.VAR_POSITIONAL:
            max_args = -1
        elif param.kind is param.KEYWORD_ONLY and param.default is param.empty:
            raise ValueError(f"{name} has a required keyword-only parameter "
                             f"{param.name!r}; RPC arguments are positional")
    return min_args, max_args


def build_handler(func: Callable, name: str) -> Handler:
    """Describe one callable as a Handler named `name`."""
    if not callable(func):
        raise TypeError(f"{name} is not callable")
    target = inspect.unwrap(func)
    if inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(target):
        mode = MODE_ASYNC
    elif getattr(func, _BLOCKING_ATTR, False) or getattr(target, _BLOCKING_ATTR, False):
        mode = MODE_BLOCKING
    else:
        mode = MODE_INLINE
    min_args, max_args = _arity(func, name)
    return Handler(func, name, mode, min_args, max_args)


def public_methods(obj: Any) -> Dict[str, Callable]:
    """The public callables of `obj`: bound methods not starting with "_"."""
    methods = {}
    for attr in dir(obj):
        if attr.startswith("_"):
            continue
        static = inspect.getattr_static(obj, attr, None)
        if isinstance(static, property) or inspect.isclass(static):
            continue
        value = getattr(obj, attr, None)
        if callable(value) and not inspect.isclass(value):
            methods[attr] = value
    return methods


def service_name(obj: Any, name: Optional[str]) -> str:
    """The service name for `obj`: `name` if given, else its class name."""
    service = name if name is not None else type(obj).__name__
    if not isinstance(service, str) or not service or "." in service:
        raise ValueError(f"invalid service name {service!r} (non-empty, no dots)")
    return service
