"""Remote exceptions by type: builtins and registered application errors are
raised as classes that are both the exception and a RemoteError, through
every client; tracebacks travel only when the server is told to send them."""
import asyncio
import json
import pickle

import pytest

import fastrpc
from fastrpc.errors import EncodeError, RemoteError, RemoteTraceback
from support import server_process


@fastrpc.register_error
class NotFound(LookupError):
    """The client's twin of serve.py's NotFound (registered by name)."""


@pytest.fixture(scope="module")
def plain():
    with server_process() as srv:
        yield srv


@pytest.fixture(scope="module")
def with_tracebacks():
    with server_process(env={"FASTRPC_TEST_SERVER": json.dumps({"send_tracebacks": True})}) as srv:
        yield srv


def raise_through(kind, address, method, *args):
    """Call `method` through each client kind; return the exception raised."""
    if kind == "client":
        with fastrpc.Client(address, timeout=10) as c:
            with pytest.raises(Exception) as caught:
                c.call(method, *args)
    elif kind == "balancer":
        with fastrpc.Balancer([address], timeout=10, health_interval=0) as b:
            with pytest.raises(Exception) as caught:
                b.call(method, *args)
    else:
        async def run():
            if kind == "aclient":
                async with fastrpc.AsyncClient(address, timeout=10) as c:
                    await c.call(method, *args)
            else:
                async with fastrpc.AsyncBalancer([address], timeout=10, health_interval=0) as b:
                    await b.call(method, *args)
        with pytest.raises(Exception) as caught:
            asyncio.run(run())
    return caught.value


KINDS = ["client", "aclient", "balancer", "abalancer"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", ["Arith.Raise", "Arith.RaiseLater"])     # inline and async handlers
def test_builtin_exceptions_are_raised_as_themselves(plain, kind, method):
    exc = raise_through(kind, plain.address, method, "KeyError", "missing")
    assert isinstance(exc, KeyError) and isinstance(exc, RemoteError)
    # str(KeyError('missing')) quotes it, on the server as anywhere
    assert exc.type == "KeyError" and exc.message == "'missing'" and str(exc) == "KeyError: 'missing'"
    exc = raise_through(kind, plain.address, method, "ZeroDivisionError", "nope")
    assert isinstance(exc, ZeroDivisionError) and isinstance(exc, ArithmeticError) and isinstance(exc, RemoteError)


@pytest.mark.parametrize("kind", KINDS)
def test_registered_application_errors_are_raised_by_name(plain, kind):
    exc = raise_through(kind, plain.address, "Arith.Raise", "NotFound", "no such user")
    assert isinstance(exc, NotFound) and isinstance(exc, LookupError) and isinstance(exc, RemoteError)
    assert exc.message == "no such user"
    # One the client did not register stays a plain RemoteError, named.
    exc = raise_through(kind, plain.address, "Arith.Raise", "Unregistered", "x")
    assert type(exc) is RemoteError and exc.type == "Unregistered"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", ["Arith.Raise", "Arith.RaiseLater"])
def test_a_remote_error_raised_by_a_handler_keeps_its_type_and_message(plain, kind, method):
    exc = raise_through(kind, plain.address, method, "PermissionDenied", "not yours")
    assert isinstance(exc, fastrpc.errors.PermissionDeniedError)
    assert exc.message == "not yours" and str(exc) == "PermissionDenied: not yours"     # not named twice
    exc = raise_through(kind, plain.address, method, "Relayed", "over quota")
    assert type(exc) is RemoteError and exc.type == "Quota" and exc.message == "over quota"


@pytest.mark.parametrize("kind", KINDS)
def test_a_handlers_timeout_is_a_timeout_for_its_caller(plain, kind):
    # A handler whose own call timed out (inside or just before the caller's
    # deadline, whichever side noticed first) fails the caller with a timeout,
    # so one `except TimeoutError` covers both.
    for raised in ("TimeoutError", "BuiltinTimeout"):
        exc = raise_through(kind, plain.address, "Arith.Raise", raised, "Back.Slow did not complete")
        assert isinstance(exc, fastrpc.errors.RemoteTimeoutError) and isinstance(exc, fastrpc.TimeoutError)
        assert isinstance(exc, TimeoutError) and isinstance(exc, RemoteError)
        assert exc.type == "TimeoutError" and exc.message == "Back.Slow did not complete"


@pytest.mark.parametrize("kind", KINDS)
def test_an_unencodable_result_is_an_encode_error(plain, kind):
    exc = raise_through(kind, plain.address, "Arith.Unencodable")
    assert isinstance(exc, EncodeError) and isinstance(exc, RemoteError) and exc.type == "EncodeError"


def test_remote_errors_pickle_as_their_twins(plain):
    exc = raise_through("client", plain.address, "Arith.Raise", "KeyError", "k")
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is type(exc) and back.message == exc.message and isinstance(back, KeyError)
    back = pickle.loads(pickle.dumps(raise_through("client", plain.address, "Arith.Raise", "NotFound", "n")))
    assert isinstance(back, NotFound) and back.message == "n"


@pytest.mark.parametrize("kind", KINDS)
def test_tracebacks_travel_only_when_the_server_sends_them(plain, with_tracebacks, kind):
    exc = raise_through(kind, plain.address, "Arith.Raise", "AttributeError", "a")
    assert getattr(exc, "remote_traceback", None) is None and not isinstance(exc.__cause__, RemoteTraceback)
    for method in ("Arith.Raise", "Arith.RaiseLater"):
        exc = raise_through(kind, with_tracebacks.address, method, "AttributeError", "a")
        assert isinstance(exc, AttributeError)
        assert "Traceback (most recent call last)" in exc.remote_traceback and "in Raise" in exc.remote_traceback
        assert isinstance(exc.__cause__, RemoteTraceback) and "serve.py" in str(exc.__cause__)


def test_register_error_refuses_what_it_cannot_map():
    with pytest.raises(TypeError):
        fastrpc.register_error(int)
    with pytest.raises(ValueError):
        fastrpc.register_error(type("KeyError", (Exception,), {}))         # a builtin's name
    with pytest.raises(ValueError):
        fastrpc.register_error(type("X", (Exception,), {}), name="MethodNotFound")
