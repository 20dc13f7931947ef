"""The fastrpc server process the end-to-end benchmarks call: `python servers.py ADDRESS`.

Prints the bound address, serves until stdin closes.
"""
import sys

import fastrpc


class Arith:
    def Sum(self, a, b):
        return a + b

    def Echo(self, data):
        return data


if __name__ == "__main__":
    server = fastrpc.Server()
    server.register(Arith())
    print(server.start(sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:0"), flush=True)
    sys.stdin.read()
    server.close()
