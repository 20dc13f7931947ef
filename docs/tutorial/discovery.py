"""Tutorial, part 3: servers announce themselves in etcd; a balancer follows.

Run with an etcd v3 at FASTRPC_ETCD (default http://127.0.0.1:2379).
"""
import os
import time

import fastrpc

etcd = fastrpc.EtcdDiscovery(os.environ.get("FASTRPC_ETCD", "http://127.0.0.1:2379"),
                             prefix="/tutorial/services/")


class Where:
    def __init__(self, name):
        self.name = name

    def Am(self):
        return self.name


def wait_for(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the balancer did not follow the registry")
        time.sleep(0.05)


servers, registrations = [], []
for name in ("a", "b"):
    server = fastrpc.Server()
    server.register(Where(name), name="Where")
    server.start("tcp://127.0.0.1:0")
    # Under a lease: a server that crashes disappears after ttl seconds.
    registrations.append(server.register_with(etcd, "where", ttl=5))
    servers.append(server)

with fastrpc.Balancer(discovery=etcd, service="where", timeout=5) as balancer:
    wait_for(lambda: {balancer.call("Where.Am") for _ in range(20)} == {"a", "b"})

    # A third server joins: the balancer's watch sees it.
    late = fastrpc.Server()
    late.register(Where("c"), name="Where")
    late.start("tcp://127.0.0.1:0")
    registrations.append(late.register_with(etcd, "where", ttl=5))
    servers.append(late)
    wait_for(lambda: "c" in {balancer.call("Where.Am") for _ in range(30)})

    # One leaves the registry (it deregisters, as close() does): calls stop going there.
    registrations[0].close()
    wait_for(lambda: "a" not in {balancer.call("Where.Am") for _ in range(30)})

for server in servers:
    server.close()                  # withdraws its registrations too
etcd.close()
print("discovery: ok")
