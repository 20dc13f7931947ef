"""Turning registered objects into a dispatch table of Handlers.

Public methods (names not starting with "_") of a registered object become
"Service.Method"; how each runs (inline, as a task, in the thread pool),
whether it streams (a generator sends items; a parameter annotated as an
iterator receives the client's), how
many positional arguments it takes and how keyword arguments bind to its
parameters are decided here, once.
"""
from __future__ import annotations

import collections.abc
import inspect
import typing
from typing import Any, Callable, Dict, Optional, Tuple

from fastrpc._core.servercore import MODE_ASYNC, MODE_BLOCKING, MODE_INLINE, STREAM_IN, STREAM_OUT, Handler

__all__ = ["blocking", "build_handler", "input_parameter_name", "public_methods"]

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


# Annotations that make a parameter the client's stream of items. Not
# Iterable: a list argument is commonly annotated so, and stays a list.
_STREAM_TYPES = (collections.abc.Iterator, collections.abc.AsyncIterator, collections.abc.AsyncIterable)


def _input_parameter(func: Callable[..., Any], sig: Optional[inspect.Signature]) -> Optional[inspect.Parameter]:
    """The parameter annotated as an iterator (Iterator, AsyncIterator or
    AsyncIterable), if any: the client's items arrive through it (a client
    or bidirectional stream)."""
    if sig is None:
        return None
    try:
        hints = typing.get_type_hints(func)
    except Exception:                       # unresolvable string annotations: read them as written
        hints = {}
    for param in sig.parameters.values():
        if param.kind not in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            continue
        hint = hints.get(param.name, param.annotation)
        origin = typing.get_origin(hint) or hint
        if isinstance(origin, type) and origin in _STREAM_TYPES:
            return param
        if isinstance(hint, str) and hint.split("[", 1)[0].rsplit(".", 1)[-1] in (
                "Iterator", "AsyncIterator", "AsyncIterable"):
            return param
    return None


def input_parameter_name(handler: Handler) -> Optional[str]:
    """The name of the parameter a streaming handler receives the client's items through."""
    param = _input_parameter(handler.func, _signature(handler.func))
    return None if param is None else param.name


def build_handler(func: Callable[..., Any], name: str) -> Handler:
    """Describe one callable as a Handler named `name`.

    A generator function (or async generator function) streams its items
    to the client; a parameter annotated ``Iterator[...]`` (or
    ``AsyncIterator[...]``) receives the client's items, and is not sent
    by the client. Both at once: a bidirectional stream. (``Iterable`` does
    not: a list argument is often annotated so.)
    """
    if not callable(func):
        raise TypeError(f"{name} is not callable")
    target = inspect.unwrap(func)
    stream = 0
    if inspect.isgeneratorfunction(target) or inspect.isasyncgenfunction(target):
        stream |= STREAM_OUT
    sig = _signature(func)
    input_param = _input_parameter(func, sig)
    if input_param is not None:
        stream |= STREAM_IN
    if inspect.isasyncgenfunction(target):
        mode = MODE_ASYNC
    elif inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(target):
        mode = MODE_ASYNC
    elif stream & STREAM_IN:
        mode = MODE_BLOCKING        # it blocks while it waits for the client's items: the pool
    elif getattr(func, _BLOCKING_ATTR, False) or getattr(target, _BLOCKING_ATTR, False):
        mode = MODE_BLOCKING
    else:
        mode = MODE_INLINE
    input_at = -1
    if input_param is not None and sig is not None:
        # The client sends the other arguments: arity and keyword binding are theirs.
        input_at = list(sig.parameters).index(input_param.name)
        sig = sig.replace(parameters=[p for p in sig.parameters.values() if p is not input_param])
    min_args, max_args, kw_required = _arity(sig)
    return Handler(func, name, mode, min_args, max_args,
                   None if sig is None else _binder(sig), kw_required, stream, input_at)


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
