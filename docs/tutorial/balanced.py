"""Tutorial, part 2: a balancer over three servers, one of which goes away."""
import collections

import fastrpc


class Where:
    def __init__(self, name):
        self.name = name

    def Am(self):
        return self.name


servers, addresses = [], []
for name in ("a", "b", "c"):
    server = fastrpc.Server()
    server.register(Where(name), name="Where")
    addresses.append(server.start("tcp://127.0.0.1:0"))
    servers.append(server)

with fastrpc.Balancer(addresses, strategy="p2c_ewma", timeout=5) as balancer:
    # Calls spread over the three; p2c_ewma prefers the fastest, least loaded.
    seen = collections.Counter(balancer.call("Where.Am") for _ in range(300))
    assert set(seen) == {"a", "b", "c"}, seen

    # A server leaves: its calls fail over to the others; none is lost.
    servers[0].close()
    answers = [balancer.call("Where.Am") for _ in range(300)]
    assert set(answers) <= {"b", "c"} and len(answers) == 300

    # Pipelined through the balancer: map() sends each server its share as one batch.
    assert len(balancer.map("Where.Am", [() for _ in range(1000)])) == 1000

for server in servers[1:]:
    server.close()
print("balanced: ok")
