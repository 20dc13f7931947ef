"""A lying server for the hostile tests: `python liar.py [HELLO]`.

It speaks fastrpc's framing but answers each call as its method says
(`Lie.Good` honestly, the others with a malformed, oversized, misplaced
or missing reply). HELLO, when given, is the hello it sends first: a JSON
settings map, or `hex:...` for raw payload bytes. Prints its address, then
serves until killed.
"""
import asyncio
import json
import struct
import sys

from fastrpc import packb, unpackb
from fastrpc._core import frame as wire


def ndarray_ext(ndim, shape, data=b""):
    """A numpy ext value with a hand-made header (lengths as given)."""
    body = bytes([1, ord("C"), 3]) + b"<f8" + bytes([ndim]) + b"".join(struct.pack(">Q", d) for d in shape)
    body += bytes([0]) + data
    return b"\xc9" + struct.pack(">I", len(body)) + b"\x01" + body


def response(seq, payload):
    return wire.encode_frame(wire.RESPONSE, seq, "", payload)


class Liar(asyncio.Protocol):
    def __init__(self, hello):
        self.hello = hello
        self.reader = wire.FrameReader()
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        if self.hello is not None:
            transport.write(wire.encode_frame(wire.PONG, 0, "", self.hello))

    def data_received(self, data):
        for f in self.reader.feed(data):
            if f.kind == wire.REQUEST:
                self.answer(f.seq, f.method, unpackb(f.payload))
            elif f.kind == wire.PING:
                self.transport.write(wire.encode_frame(wire.PONG, f.seq, "", f.payload))

    def answer(self, seq, method, args):
        write = self.transport.write
        lie = method.split(".", 1)[1]
        if lie == "Good":
            write(response(seq, packb(args[0] if args else None)))
        elif lie == "BadNdim":
            write(response(seq, ndarray_ext(200, [1] * 200, b"\0" * 8)))
        elif lie == "ZeroDim":
            write(response(seq, ndarray_ext(3, [0, 2 ** 40, 2 ** 40])))
        elif lie == "Malformed":
            write(response(seq, b"\xc1"))
        elif lie == "BadError":
            write(wire.encode_frame(wire.ERROR, seq, "", packb("not a list")))
        elif lie == "Deep":
            write(response(seq, b"\x91" * 100_000 + b"\xc0"))
        elif lie == "Oversized":
            write(response(seq, packb(b"z" * args[0])))
        elif lie == "WrongSeq":
            write(response(seq + 1_000_000, packb("not yours")))
        elif lie == "Twice":
            write(response(seq, packb(args[0])) + response(seq, packb("second")))
        elif lie == "Silent":
            pass
        elif lie == "Request":
            write(wire.encode_frame(wire.REQUEST, 1, "Client.Own", packb([])))
        elif lie == "Truncate":
            frame = response(seq, packb("x" * 100))
            write(frame[:len(frame) // 2])
            self.transport.close()
        elif lie == "Garbage":
            write(b"\x00\x00\x00\x20" + b"\xff" * 32)


async def main():
    hello = None
    if len(sys.argv) > 1:
        arg = sys.argv[1]
        hello = bytes.fromhex(arg[4:]) if arg.startswith("hex:") else packb(json.loads(arg))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Liar(hello), "127.0.0.1", 0)
    print(f"tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
