"""Just enough of the `cython` module for pure-Python-mode sources to run uncompiled.

fastrpc/_core/select.py and fastrpc/go/_gob.py are compiled by Cython from
the same source that, run as plain Python, is their reference
implementation. Run that way they import `cython` for its type names and
decorators; this stands in when Cython is not installed (a user's
environment after ``pip install``), with the meaning the uncompiled code
needs: types are the Python types, casts convert, decorators do nothing.
"""
from __future__ import annotations

from typing import Any, Callable

compiled = False

Py_ssize_t = int
int = int  # noqa: A001 - the C type names shadow builtins on purpose, as cython's do
longlong = int
ulonglong = int
double = float


def cast(kind: Callable[[Any], Any], value: Any) -> Any:
    """`value` converted to `kind` (cython.cast run uncompiled)."""
    return kind(value)


def declare(kind: Any, value: Any = None) -> Any:
    """`value` itself (cython.declare run uncompiled)."""
    return value


def _no_op_directive(*_args: Any, **_kwargs: Any) -> Callable[[Any], Any]:
    return lambda func: func


boundscheck = wraparound = cdivision = _no_op_directive


def cfunc(func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` itself (a C-level function when compiled; the reference runs
    such functions only where `compiled` says so)."""
    return func
