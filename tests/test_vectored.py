"""Large bytes payloads sent from their own memory (vectored writes): what
goes on the wire is byte for byte what a copying encoder writes, whatever
the payloads' sizes, nesting and failures, and every client and the server
carry them whole."""
import asyncio
import os
import threading

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastrpc
from fastrpc._core.buffer import output_size
from fastrpc._core.calltable import CallTable
from fastrpc.errors import EncodeError
from support import server_process

ATTACH = 32768          # fastrpc._core.buffer.ATTACH_SIZE


def new_table(vectored):
    return CallTable(max_frame_size=1 << 26, max_depth=32, max_len=1 << 20, max_bytes=1 << 26,
                     keep_tuples=True, vectored=vectored)


def joined(output):
    if type(output) is list:
        return b"".join(bytes(piece) for piece in output)
    return b"" if output is None else bytes(output)


class Unencodable:
    pass


sizes = st.sampled_from([0, 5, ATTACH - 1, ATTACH, ATTACH + 1, 100_000])
blobs = sizes.map(lambda n: os.urandom(n))
values = st.recursive(
    st.one_of(blobs, st.integers(-2**63, 2**64 - 1), st.text(max_size=20), st.none()),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner),
                            st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=8)
# A call: its arguments, and whether an unencodable value follows them.
calls = st.lists(st.tuples(st.lists(values, max_size=4), st.booleans()), min_size=1, max_size=6)


def large_bytes_in(value):
    if type(value) is bytes:
        return [value] if len(value) >= ATTACH else []
    if isinstance(value, (list, tuple)):
        return [b for v in value for b in large_bytes_in(v)]
    if isinstance(value, dict):
        return [b for v in value.values() for b in large_bytes_in(v)]
    return []


@settings(max_examples=150, deadline=None)
@given(calls)
def test_the_wire_is_what_a_copying_encoder_writes(script):
    plain, vectored = new_table(False), new_table(True)
    attached = []
    for args, fails in script:
        if fails:
            args = args + [Unencodable()]     # encoding fails after the payloads: nothing of it stays
        for table in (plain, vectored):
            if fails:
                with pytest.raises(EncodeError):
                    table.request("Blob.Put", tuple(args), object(), 1500, b"\x80")
            else:
                table.request("Blob.Put", tuple(args), object(), 1500, b"\x80")
        if not fails:
            attached += large_bytes_in(args)
    expected = joined(plain.take_output())
    output = vectored.take_output()
    assert joined(output) == expected
    if attached:
        # The large payloads themselves, not copies of them.
        assert type(output) is list and output_size(output) == len(expected)
        assert [id(p) for p in output if type(p) is bytes and len(p) >= ATTACH] == [id(b) for b in attached]
    assert vectored.take_output() is None and plain.take_output() is None


def test_a_request_above_the_servers_frame_limit_fails_alone():
    class Blob:
        def Size(self, data):
            return len(data)
    server = fastrpc.Server(max_frame_size=100_000)
    server.register(Blob())
    try:
        with fastrpc.Client(server.start("tcp://127.0.0.1:0")) as c:
            assert c.call("Blob.Size", b"a" * 60_000) == 60_000        # learns the limit
            with pytest.raises(fastrpc.errors.FrameTooLargeError):
                c.call("Blob.Size", b"b" * 150_000)
            futures = [c.go("Blob.Size", b"c" * 40_000), c.go("Blob.Size", b"d" * 40_000)]
            with pytest.raises(fastrpc.errors.FrameTooLargeError):
                c.go("Blob.Size", b"e" * 40_000, b"f" * 70_000)
            assert [f.result(10) for f in futures] == [40_000, 40_000]  # nothing of it was sent
            assert c.call("Blob.Size", b"g" * 99_000) == 99_000
    finally:
        server.close()


@pytest.fixture(scope="module")
def server():
    with server_process() as s:
        yield s


def blob(n, seed):
    """n bytes, different for every seed."""
    return seed.to_bytes(4, "big") + os.urandom(n - 4)


SIZES = [ATTACH - 1, ATTACH, 70_000, 1 << 20, 5 << 20]


def test_blocking_client_call_go_map(server):
    with fastrpc.Client(server.address) as c:
        for i, n in enumerate(SIZES):
            b = blob(n, i)
            assert c.call("Arith.Echo", b) == b
            assert c.call("Arith.Echo", [b, "tail", {"k": b}]) == [b, "tail", {"k": b}]
        payloads = [blob(60_000, i) for i in range(40)]
        futures = [c.go("Arith.Echo", p) for p in payloads]       # many attached frames in one write
        assert [f.result(30) for f in futures] == payloads
        assert c.map("Arith.Echo", [(p,) for p in payloads], window=16) == payloads
        arr = np.arange(50_000, dtype=np.float64)
        out = c.call("Arith.Echo", [arr, payloads[0]])
        np.testing.assert_array_equal(out[0], arr)
        assert out[1] == payloads[0]


def test_many_threads_interleave_large_and_small_calls(server):
    errors = []
    with fastrpc.Client(server.address) as c:
        def work(seed):
            try:
                for i in range(30):
                    if (seed + i) % 3 == 0:
                        b = blob(40_000 + 997 * i, seed)
                        assert c.call("Arith.Echo", b) == b
                    else:
                        assert c.call("Arith.Sum", seed, i) == seed + i
            except BaseException as exc:   # reported below
                errors.append(exc)
        threads = [threading.Thread(target=work, args=(s,)) for s in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert errors == []


def test_async_client(server):
    async def main():
        async with fastrpc.AsyncClient(server.address) as c:
            payloads = [blob(n, i) for i, n in enumerate(SIZES)]
            for p in payloads:
                assert await c.call("Arith.Echo", p) == p
            many = [blob(50_000, i) for i in range(30)]
            assert await asyncio.gather(*[c.call("Arith.Echo", p) for p in many]) == many
            assert await c.map("Arith.Echo", [(p,) for p in many]) == many
    asyncio.run(main())


def test_balancer(server):
    with server_process() as other:
        with fastrpc.Balancer([server.address, other.address], strategy="round_robin") as b:
            payloads = [blob(45_000, i) for i in range(20)]
            assert [b.call("Arith.Echo", p) for p in payloads] == payloads
            assert b.map("Arith.Echo", [(p,) for p in payloads]) == payloads


def test_streams_both_ways(server):
    payloads = [blob(40_000 + i, i) for i in range(12)]
    with fastrpc.Client(server.address) as c:
        for method in ("Streams.Echo", "Streams.AEcho"):
            assert list(c.stream(method, send=iter(payloads), window=(4, 1 << 20))) == payloads


@pytest.mark.parametrize("use_uvloop", [False, True])
def test_server_replies_on_either_event_loop(use_uvloop):
    class Blob:
        def Make(self, n, seed):
            return blob(n, seed)

        def Pair(self, a, b):
            return [a, b, len(a) + len(b)]
    server = fastrpc.Server(use_uvloop=use_uvloop)
    server.register(Blob())
    try:
        with fastrpc.Client(server.start("tcp://127.0.0.1:0")) as c:
            for i, n in enumerate(SIZES):
                got = c.call("Blob.Make", n, i)
                assert len(got) == n and got[:4] == i.to_bytes(4, "big")
                a, b = blob(n, i), blob(ATTACH, i + 1)
                assert c.call("Blob.Pair", a, b) == [a, b, n + ATTACH]
            replies = c.map("Blob.Make", [(50_000, i) for i in range(64)], window=32)
            assert [r[:4] for r in replies] == [i.to_bytes(4, "big") for i in range(64)]
    finally:
        server.close()
