"""Hostile and broken peers: the server answers clearly or drops only that connection."""
import json
import socket
import struct

import pytest

from fastrpc import Client, packb
from fastrpc._core import frame as wire
from fastrpc._core.frame import FrameReader
from support import read_frames, server_process


def raw_connect(address):
    host, port = address[len("tcp://"):].rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=5)
    return s


def is_closed(sock, timeout=5):
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_malformed_argument_payload_gets_an_error_reply(server):
    with raw_connect(server.address) as s:
        s.sendall(wire.encode_frame(wire.REQUEST, 1, "Arith.Sum", b"\xc1")
                  + wire.encode_frame(wire.REQUEST, 2, "Arith.Sum", packb(5))
                  + wire.encode_frame(wire.REQUEST, 3, "Arith.Sum", b"\xdd\xff\xff\xff\xff")
                  + wire.encode_frame(wire.REQUEST, 4, "Arith.Sum", packb([1, 2])))
        frames = read_frames(s, 4)
    by_seq = {f.seq: f for f in frames}
    for seq in (1, 2, 3):
        assert by_seq[seq].kind == wire.ERROR
        assert from_msgpack(by_seq[seq].payload)[0] == "DecodeError"
    assert by_seq[4].kind == wire.RESPONSE and from_msgpack(by_seq[4].payload) == 3


def from_msgpack(data):
    from fastrpc import unpackb
    return unpackb(data)


def test_garbage_closes_only_that_connection(server):
    with Client(server.address) as good:
        with raw_connect(server.address) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 10)
            assert is_closed(s)
        assert good.call("Arith.Sum", 1, 2) == 3


def test_server_says_hello_with_its_frame_limit(server):
    with raw_connect(server.address) as s:
        s.settimeout(5)
        (hello,) = FrameReader().feed(s.recv(65536))
    assert (hello.kind, hello.seq) == (wire.PONG, 0)
    assert from_msgpack(hello.payload) == {"max_frame_size": wire.DEFAULT_MAX_FRAME_SIZE, "kwargs": True}


def test_oversized_request_fails_alone_and_the_connection_goes_on(server):
    # A request declaring 4 GiB: answered FrameTooLarge as soon as its
    # header is in, its bytes dropped as they come; the connection serves on.
    with raw_connect(server.address) as s:
        s.sendall(struct.pack(">IBBHQ", 0xFFFFFFF0, wire.REQUEST, 0, 0, 7) + b"x" * 100_000)
        (f,) = read_frames(s, 1)
        assert (f.kind, f.seq) == (wire.ERROR, 7)
        kind, message = from_msgpack(f.payload)
        assert kind == "FrameTooLarge" and f"max_frame_size={wire.DEFAULT_MAX_FRAME_SIZE}" in message
        assert not is_closed(s, timeout=0.2)
    with Client(server.address) as c:
        assert c.call("Arith.Sum", 1, 2) == 3


def test_oversized_request_sent_whole_then_more_calls():
    with server_process(env={"FASTRPC_TEST_SERVER": json.dumps({"max_frame_size": 1024})}) as srv:
        with raw_connect(srv.address) as s:
            big = wire.encode_frame(wire.REQUEST, 1, "Arith.Echo", packb([b"x" * 5000]))
            s.sendall(big[:3000])
            s.sendall(big[3000:] + wire.encode_frame(wire.REQUEST, 2, "Arith.Sum", packb([1, 2])))
            frames = {f.seq: f for f in read_frames(s, 2)}
        assert frames[1].kind == wire.ERROR and from_msgpack(frames[1].payload)[0] == "FrameTooLarge"
        assert frames[2].kind == wire.RESPONSE and from_msgpack(frames[2].payload) == 3


def test_replies_before_a_bad_frame_are_still_sent(server):
    with raw_connect(server.address) as s:
        s.sendall(wire.encode_frame(wire.REQUEST, 1, "Arith.Sum", packb([1, 2]))
                  + b"\x00\x00\x00\x0c\x63" + b"\x00" * 11)
        frames = read_frames(s, 1)
        assert frames and frames[0].seq == 1 and frames[0].kind == wire.RESPONSE
        assert is_closed(s)


def test_client_sending_reply_kinds_is_dropped(server):
    with raw_connect(server.address) as s:
        s.sendall(wire.encode_frame(wire.RESPONSE, 1, "", packb(1)))
        assert is_closed(s)


def test_truncated_frame_then_disconnect_does_not_hurt_the_server(server):
    frame = wire.encode_frame(wire.REQUEST, 1, "Arith.Sum", packb([1, 2]))
    for cut in (1, 5, 17, len(frame) - 1):
        with raw_connect(server.address) as s:
            s.sendall(frame[:cut])
    with Client(server.address) as c:
        assert c.call("Arith.Sum", 1, 2) == 3


def test_ping_is_answered_with_pong(server):
    with raw_connect(server.address) as s:
        s.sendall(wire.encode_frame(wire.PING, 77, "", b"hello"))
        (f,) = read_frames(s, 1)
        assert (f.kind, f.seq, f.payload) == (wire.PONG, 77, b"hello")


def test_client_rejects_a_server_that_sends_garbage():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    c = Client(f"tcp://127.0.0.1:{port}")
    peer, _ = listener.accept()
    fut = c.go("X.Y")
    peer.recv(1024)
    peer.sendall(b"\xff" * 64)
    from fastrpc.errors import ConnectionLostError
    with pytest.raises(ConnectionLostError, match="protocol error|lost|closed"):
        fut.result(timeout=5)
    peer.close()
    listener.close()
    c.close()


def test_malformed_metadata_gets_an_error_reply(server):
    with raw_connect(server.address) as s:
        s.sendall(wire.encode_frame(wire.REQUEST, 1, "Arith.Slow", packb([0, "x"]), meta=b"\xc1")
                  + wire.encode_frame(wire.REQUEST, 2, "Arith.Slow", packb([0, "ok"]), meta=packb({"k": 1})))
        by_seq = {f.seq: f for f in read_frames(s, 2)}
    assert by_seq[1].kind == wire.ERROR and from_msgpack(by_seq[1].payload)[0] == "DecodeError"
    assert by_seq[2].kind == wire.RESPONSE and from_msgpack(by_seq[2].payload) == "ok"


class FakeServer:
    """A listening socket the test drives by hand, to play a misbehaving server."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.address = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"

    def accept(self):
        peer, _ = self.listener.accept()
        peer.settimeout(5)
        return peer

    def close(self):
        self.listener.close()


def test_client_rejects_a_server_that_sends_requests():
    from fastrpc.errors import ConnectionLostError
    fake = FakeServer()
    c = Client(fake.address)
    peer = fake.accept()
    fut = c.go("X.Y")
    peer.recv(1024)
    peer.sendall(wire.encode_frame(wire.REQUEST, 1, "Evil.Call", packb([])))
    with pytest.raises(ConnectionLostError, match="protocol error"):
        fut.result(timeout=5)
    peer.close()
    fake.close()
    c.close()


def test_client_answers_server_ping_with_pong():
    fake = FakeServer()
    c = Client(fake.address)
    peer = fake.accept()
    fut = c.go("X.Y")
    (request,) = read_frames(peer, 1)
    peer.sendall(wire.encode_frame(wire.PING, 42, "", b"beat"))
    (pong,) = read_frames(peer, 1)
    assert (pong.kind, pong.seq, pong.payload) == (wire.PONG, 42, b"beat")
    peer.sendall(wire.encode_frame(wire.RESPONSE, request.seq, "", packb("done")))
    assert fut.result(timeout=5) == "done"
    peer.close()
    fake.close()
    c.close()
