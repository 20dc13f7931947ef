"""Reflection: the built-in service that says what a server serves.

Owns the ``_fastrpc`` service (``_fastrpc.Services``, ``_fastrpc.Describe``):
every registered service, and for each method its parameters (names, kinds,
defaults, annotations), return annotation, docstring and how it runs. It is
registered like any service, so it goes through the normal call path (TLS,
the shared secret, ``authorize``); ``Server(reflection=False)`` leaves it out.
Services whose names start with "_" (this one) are not listed.
"""
from __future__ import annotations

import inspect
from typing import Any, Dict, List, Optional

from fastrpc._core.servercore import MODE_ASYNC, MODE_BLOCKING, STREAM_IN, STREAM_OUT, Handler

__all__ = ["SERVICE", "Reflection", "describe_handler"]

#: The name the reflection service is registered under.
SERVICE = "_fastrpc"

_MODES = {MODE_ASYNC: "async", MODE_BLOCKING: "blocking"}
# What of a method streams (None: a unary method).
_STREAMS = {STREAM_OUT: "server", STREAM_IN: "client", STREAM_OUT | STREAM_IN: "bidirectional"}
_KINDS = {
    inspect.Parameter.POSITIONAL_ONLY: "positional",
    inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional_or_keyword",
    inspect.Parameter.VAR_POSITIONAL: "var_positional",
    inspect.Parameter.KEYWORD_ONLY: "keyword",
    inspect.Parameter.VAR_KEYWORD: "var_keyword",
}


def _annotation(value: Any) -> Optional[str]:
    if value is inspect.Parameter.empty:
        return None
    return value if isinstance(value, str) else inspect.formatannotation(value)


def describe_handler(handler: Handler) -> Dict[str, Any]:
    """A method's description: parameters, return annotation, docstring, mode,
    and what of it streams ("server", "client", "bidirectional"; None: unary)."""
    params: List[Dict[str, Any]] = []
    returns = None
    try:
        signature = inspect.signature(handler.func)
    except (TypeError, ValueError):
        signature = None                    # a builtin without a signature
    if signature is not None:
        for p in signature.parameters.values():
            entry: Dict[str, Any] = {"name": p.name, "kind": _KINDS[p.kind]}
            if p.default is not p.empty:
                entry["default"] = repr(p.default)
            annotation = _annotation(p.annotation)
            if annotation is not None:
                entry["annotation"] = annotation
            params.append(entry)
        returns = _annotation(signature.return_annotation)
    return {"params": params, "returns": returns, "doc": inspect.getdoc(handler.func),
            "mode": _MODES.get(handler.mode, "inline"), "stream": _STREAMS.get(handler.stream)}


class Reflection:
    """The ``_fastrpc`` service: what this server serves."""

    def __init__(self, dispatcher: Any) -> None:
        self._dispatcher = dispatcher

    def Services(self) -> List[str]:
        """The services this server serves, sorted (built-in ones left out)."""
        return sorted({name.split(".", 1)[0] for name in self._dispatcher.methods})

    def Describe(self, name: Optional[str] = None) -> Dict[str, Any]:
        """Every service (or the one `name`, "Service" or "Service.Method"):
        ``{service: {"doc": ..., "methods": {method: description}}}``."""
        service, _, method = (name or "").partition(".")
        out: Dict[str, Any] = {}
        for handler in self._dispatcher.handlers_sorted():
            svc, _, meth = handler.name.partition(".")
            if name is None and svc.startswith("_"):
                continue
            if service and svc != service or method and meth != method:
                continue
            entry = out.setdefault(svc, {"doc": self._dispatcher.service_doc(svc), "methods": {}})
            entry["methods"][meth] = describe_handler(handler)
        if name is not None and not out:
            raise LookupError(f"no service or method named {name!r}")
        return out
