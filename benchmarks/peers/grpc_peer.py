"""grpcio peer: a thread-pool server and a sync client, no generated code.

    python grpc_peer.py server HOST:PORT    prints the bound address

Methods /Arith/Sum (two int64 in, one out, struct-packed) and /Arith/Echo
(bytes in, bytes out) use identity serializers, so the figures measure
grpcio itself rather than a serialization library.
"""
import struct
import sys
import threading
import time
from concurrent import futures

import grpc

_PAIR = struct.Struct(">qq")
_ONE = struct.Struct(">q")


def _sum(request, context):
    a, b = _PAIR.unpack(request)
    return _ONE.pack(a + b)


def _echo(request, context):
    return request


def serve(address):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                         options=[("grpc.max_receive_message_length", 64 << 20)])
    handler = grpc.method_handlers_generic_handler("Arith", {
        "Sum": grpc.unary_unary_rpc_method_handler(_sum),
        "Echo": grpc.unary_unary_rpc_method_handler(_echo),
    })
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(address)
    server.start()
    print(f"{address.rsplit(':', 1)[0]}:{port}", flush=True)
    try:
        sys.stdin.read()
    finally:
        server.stop(0)


class GrpcClient:
    """The sync client side, used in-process by the benchmarks."""

    def __init__(self, address):
        self.channel = grpc.insecure_channel(address)
        grpc.channel_ready_future(self.channel).result(timeout=10)
        self.sum = self.channel.unary_unary("/Arith/Sum")
        self.echo = self.channel.unary_unary("/Arith/Echo")

    def call_sum(self, a, b):
        return _ONE.unpack(self.sum(_PAIR.pack(a, b)))[0]

    def sum_in_flight(self, n):
        futs = [self.sum.future(_PAIR.pack(i, 1)) for i in range(n)]
        return [_ONE.unpack(f.result())[0] for f in futs]

    def call_echo(self, data):
        return self.echo(data)

    def close(self):
        self.channel.close()


if __name__ == "__main__":
    serve(sys.argv[2])
