"""A tests/serve.py server that registers in etcd, for the multi-host scenarios:
``python fleet_registered.py ADDRESS SERVICE ETCD_URL...`` prints the address
it serves, then keeps trying to register (as a server started during an etcd
outage must) and prints ``registered`` once etcd took it; serves until stdin
closes."""
import sys
import time

import fastrpc
from serve import Arith


def main():
    address, service, urls = sys.argv[1], sys.argv[2], sys.argv[3:]
    server = fastrpc.Server()
    server.register(Arith())
    print(server.start(address), flush=True)
    etcd = fastrpc.EtcdDiscovery(urls, timeout=1.0)
    while True:
        try:
            server.register_with(etcd, service, address, ttl=3)
            break
        except (fastrpc.RPCError, OSError):
            time.sleep(0.2)                      # no quorum yet: try again
    print("registered", flush=True)
    sys.stdin.read()
    server.close()


if __name__ == "__main__":
    main()
