"""Tutorial, part 1: a service, called three ways."""
import asyncio

import fastrpc


class Arith:
    """Every public method is callable as "Arith.<Method>"."""

    def Sum(self, a, b):
        return a + b

    def Div(self, a, b):
        return a / b                 # ZeroDivisionError reaches the caller as a RemoteError

    async def Slow(self, value, seconds):
        await asyncio.sleep(seconds)     # async handlers run as tasks on the server's loop
        return value


server = fastrpc.Server()
server.register(Arith())
address = server.start("tcp://127.0.0.1:0")    # port 0: any free port; the real one is returned

with fastrpc.Client(address, timeout=5) as client:
    assert client.call("Arith.Sum", 10, 20) == 30

    # Many calls in flight on one connection: futures, like net/rpc's Go.
    futures = [client.go("Arith.Sum", i, i) for i in range(100)]
    assert [f.result() for f in futures] == [2 * i for i in range(100)]

    # Errors name the remote exception.
    try:
        client.call("Arith.Div", 1, 0)
    except fastrpc.RemoteError as error:
        assert error.type == "ZeroDivisionError"

    # A timeout travels with the call: the server cancels it at the deadline.
    try:
        client.call("Arith.Slow", "late", 1.0, timeout=0.1)
    except fastrpc.TimeoutError:
        pass


async def main():
    async with fastrpc.AsyncClient(address) as client:
        results = await asyncio.gather(*(client.call("Arith.Slow", i, 0.01) for i in range(50)))
        assert results == list(range(50))

asyncio.run(main())
server.close()
print("service: ok")
