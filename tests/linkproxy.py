"""A TCP proxy that plays a network link: delay, jitter, loss, blackhole.

The kernel's netem qdisc is not available on every machine, so the
multi-host scenarios put this proxy on the path between two hosts:
``python linkproxy.py LISTEN_HOST:PORT TARGET_HOST:PORT`` prints
``ready HOST:PORT`` and then reads settings from stdin, one JSON object per
line, applied at once to every connection::

    {"delay": 0.040, "jitter": 0.005}   # one way, each direction, seconds
    {"loss": 0.01}                      # a chunk is late by a retransmit (TCP's view of loss)
    {"blackhole": true}                 # accept, forward nothing, answer nothing
    {"reset": true}                     # close every connection now

Each direction keeps its bytes in order: a chunk never leaves before the
one read before it. Loss on a TCP path is seen by the application as a
retransmission delay, so a lost chunk is held for ``rto`` (0.2 s) more.
"""
import asyncio
import json
import random
import sys

__all__ = ["Link", "main"]


class Link:
    """The settings every connection through the proxy follows."""

    def __init__(self):
        self.delay = 0.0
        self.jitter = 0.0
        self.loss = 0.0
        self.rto = 0.2
        self.blackhole = False
        self.connections = set()
        self.rng = random.Random(1)

    def apply(self, settings):
        for name in ("delay", "jitter", "loss", "rto"):
            if name in settings:
                value = float(settings[name])
                if value < 0:
                    raise ValueError(f"{name} must be >= 0")
                setattr(self, name, value)
        if "blackhole" in settings:
            self.blackhole = bool(settings["blackhole"])
        if settings.get("reset"):
            for writer in list(self.connections):
                writer.transport.abort()

    def lateness(self):
        """How long one chunk takes over the link now."""
        late = self.delay
        if self.jitter:
            late += self.rng.uniform(-self.jitter, self.jitter)
        if self.loss and self.rng.random() < self.loss:
            late += self.rto
        return max(0.0, late)


async def _pipe(link, reader, writer):
    """Copy reader to writer, each chunk at its own time, in order."""
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()

    async def deliver():
        while True:
            due, data = await queue.get()
            if data is None:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            while link.blackhole:                 # silence: hold everything, send nothing
                await asyncio.sleep(0.05)
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.ensure_future(deliver())
    last_due = 0.0
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            due = max(last_due, loop.time() + link.lateness())
            last_due = due
            await queue.put((due, data))
    except (ConnectionError, OSError):
        pass
    await queue.put((0.0, None))
    try:
        await sender
    except (ConnectionError, OSError):
        pass


async def _serve(link, listen, target):
    host, port = target.rsplit(":", 1)

    async def accepted(reader, writer):
        link.connections.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.close()
            link.connections.discard(writer)
            return
        link.connections.add(up_writer)
        try:
            await asyncio.gather(_pipe(link, reader, up_writer), _pipe(link, up_reader, writer))
        finally:
            link.connections.discard(writer)
            link.connections.discard(up_writer)

    lhost, lport = listen.rsplit(":", 1)
    server = await asyncio.start_server(accepted, lhost, int(lport))
    bound = server.sockets[0].getsockname()
    print(f"ready {bound[0]}:{bound[1]}", flush=True)
    loop = asyncio.get_running_loop()
    control = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(control), sys.stdin)
    while True:
        line = await control.readline()
        if not line:
            break                                  # stdin closed: stop
        try:
            link.apply(json.loads(line))
            print("ok", flush=True)
        except (ValueError, TypeError) as exc:
            print(f"error {exc}", flush=True)
    server.close()


def main():
    asyncio.run(_serve(Link(), sys.argv[1], sys.argv[2]))


if __name__ == "__main__":
    main()
