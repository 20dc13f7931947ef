"""A blocking connection's compiled reads and writes (fastrpc._core.transport),
against a peer played by the test on a real socket: what it writes is
exactly the frames, a write the socket cannot take at once waits without
holding up other threads, and replies are taken however the bytes arrive."""
import signal
import socket
import threading
import time

import pytest

import fastrpc
from fastrpc import packb, unpackb
from fastrpc._core import frame as wire
from fastrpc._core.calltable import CallTable
from fastrpc.errors import ConnectionLostError
from support import read_frames


@pytest.fixture
def peer():
    """A connected Client and the socket the test answers it on."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = fastrpc.Client("tcp://127.0.0.1:%d" % listener.getsockname()[1])
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            yield client, conn
        finally:
            client.close()
            conn.close()


def test_a_write_larger_than_the_socket_buffer_waits_for_the_peer_without_holding_up_other_threads(peer):
    client, conn = peer
    payload = bytes(range(256)) * (64 * 1024)         # 16 MiB: far more than the socket buffers hold
    outcome = []
    caller = threading.Thread(target=lambda: outcome.append(client.call("Echo.Big", payload, timeout=60)))
    caller.start()
    # The peer reads nothing yet: the caller stays in its write. This
    # thread runs meanwhile (it could not wake from sleep if the writer
    # held the GIL while it waited for room).
    time.sleep(0.5)
    assert caller.is_alive() and not outcome
    [request] = read_frames(conn, 1, timeout=30)
    assert request.kind == wire.REQUEST and request.method == "Echo.Big"
    assert unpackb(request.payload) == [payload]      # every byte, in order
    conn.sendall(wire.encode_frame(wire.RESPONSE, request.seq, "", packb(len(payload))))
    caller.join(30)
    assert outcome == [len(payload)]


def test_replies_are_taken_however_their_bytes_arrive(peer):
    client, conn = peer
    first, second, third = (client.go("Arith.Sum", i, 1) for i in range(3))
    requests = read_frames(conn, 3)
    assert [unpackb(r.payload) for r in requests] == [[0, 1], [1, 1], [2, 1]]
    replies = [wire.encode_frame(wire.RESPONSE, r.seq, "", packb(i + 1)) for i, r in enumerate(requests)]
    for byte in replies[0]:                           # one byte at a time
        conn.sendall(bytes([byte]))
        time.sleep(0.001)
    assert first.result(5) == 1
    conn.sendall(replies[1] + replies[2][:5])         # a whole reply and the start of the next
    assert second.result(5) == 2
    assert not third.done()
    conn.sendall(replies[2][5:])
    assert third.result(5) == 3


def test_a_peer_that_closes_fails_the_calls_it_did_not_answer(peer):
    client, conn = peer
    call = client.go("Arith.Sum", 1, 2)
    read_frames(conn, 1)
    conn.close()
    with pytest.raises(ConnectionLostError, match="closed by the server"):
        call.result(5)


def test_receive_tells_nothing_arrived_from_the_end_of_the_stream():
    table = CallTable(max_frame_size=1 << 20, max_depth=16, max_len=1 << 10, max_bytes=1 << 20)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        assert table.receive(ours.fileno()) == -1     # nothing arrived: no wait
        theirs.sendall(wire.encode_frame(wire.PONG, 0, "", packb({})))
        assert table.receive(ours.fileno()) > 0
        theirs.close()
        assert table.receive(ours.fileno()) == 0      # the peer closed
    with pytest.raises(OSError):
        table.receive(ours.fileno())                  # a closed descriptor


class Interrupted(Exception):
    pass


def test_a_signal_while_a_call_waits_runs_its_handler(server):
    # The waiting thread sleeps in epoll_wait(2): a signal interrupts it,
    # its Python handler runs, and the wait goes on (a handler that
    # returns) or the call raises what the handler raised.
    signals = []

    def count(signum, frame):
        signals.append(signum)

    def interrupt(signum, frame):
        raise Interrupted()

    with fastrpc.Client(server.address) as client:
        previous = signal.signal(signal.SIGALRM, count)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.02, 0.02)
            assert client.call("Arith.Sleep", 0.3) is not None
            signal.setitimer(signal.ITIMER_REAL, 0)
            assert signals                          # the handler ran, the call went on
            signal.signal(signal.SIGALRM, interrupt)
            signal.setitimer(signal.ITIMER_REAL, 0.1)
            with pytest.raises(Interrupted):
                client.call("Arith.Sleep", 5)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        assert client.call("Arith.Sum", 1, 2) == 3
