"""Turning registered objects into a dispatch table of Handlers.

Public methods (names not starting with "_") of a registered object become
"Service.Method"; how each runs (inline, as a task, in the thread pool), how
many positional arguments it takes and how keyword arguments bind to its
parameters are decided here, once.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Optional, Tuple

from fastrpc._core.servercore import MODE_ASYNC, MODE_BLOCKING, MODE_INLINE, Handler

__all__ = ["blocking", "build_handler", "public_methods"]

_BLOCKING_ATTR = "__fastrpc_blocking__"


def blocking(func: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a handler as blocking: the server runs it in its thread pool.

    Use it for handlers that sleep, do file or network I/O, or hold the GIL
    only briefly (numpy, hashing), so they do not stall other calls.
    """
    setattr(func, _BLOCKING_ATTR, True)
    return func


def _signature(func: Callable[..., Any]) -> Optional[inspect.Signature]:
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):
        return None           # builtins without a signature: let the call decide


def _arity(sig: Optional[inspect.Signature]) -> Tuple[int, int, bool]:
    """(fewest, most (-1: any) positional arguments, has a required keyword-only one)."""
    if sig is None:
        return 0, -1, False
    min_args = max_args = 0
    kw_required = False
    for param in sig.parameters.values():
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            max_args += 1
            if param.default is param.empty:
                min_args += 1
        elif param.kind is param.VAR_POSITIONAL:
            max_args = -1
        elif param.kind is param.KEYWORD_ONLY and param.default is param.empty:
            kw_required = True
    return min_args, max_args, kw_required


def _binder(sig: inspect.Signature) -> Callable[[tuple[Any, ...], Optional[dict[Any, Any]]], Tuple[Tuple[Any, ...], Dict[str, Any]]]:
    """bind(args, kwargs) for a call with keyword arguments: the arguments as
    the handler takes them, or TypeError naming what does not fit (an unknown
    or missing name, a value given twice). Only calls that carry keyword
    arguments (or handlers with required keyword-only parameters) pay for it."""
    params = sig.parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    by_name = {name for name, p in params.items()
               if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}

    def bind(args: tuple[Any, ...], kwargs: Optional[dict[Any, Any]]) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
        if kwargs:
            for key in kwargs:
                if type(key) is not str:
                    raise TypeError(f"keyword argument names are str, not {type(key).__name__}")
                # An unknown name is the likelier mistake: say so before "missing".
                if not takes_any and key not in by_name:
                    known = ", ".join(sorted(by_name)) or "none"
                    raise TypeError(f"unexpected keyword argument {key!r} (it takes: {known})")
        bound = sig.bind(*args, **(kwargs or {}))
        return bound.args, bound.kwargs
    return bind


def build_handler(func: Callable[..., Any], name: str) -> Handler:
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
    sig = _signature(func)
    min_args, max_args, kw_required = _arity(sig)
    return Handler(func, name, mode, min_args, max_args,
                   None if sig is None else _binder(sig), kw_required)


def public_methods(obj: Any) -> Dict[str, Callable[..., Any]]:
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
