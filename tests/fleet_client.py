"""A client for the multi-host scenarios, run inside a fleet host:
``python fleet_client.py SECONDS SPEC`` makes idempotent balanced calls of
Arith.Pid from 4 threads for SECONDS and prints one JSON line: every call's
start (monotonic), duration, and the pid that answered or the error. SPEC is
JSON: {"endpoints": [address or {"address", "lat", "lon"}...], or
"etcd": [url...] and "service"; optionally "strategy", "origin": [lat,
lon] and "options" (more Balancer settings)}. The output also lists each
change of the balancer's endpoint set. The clock is the
machine's, shared with the test that moves the links. A line "stop" on
stdin ends the run early."""
import json
import sys
import threading
import time

import fastrpc


def main():
    seconds = float(sys.argv[1])
    spec = json.loads(sys.argv[2])
    endpoints = [e if isinstance(e, str) else fastrpc.Endpoint(**e) for e in spec.get("endpoints", ())]
    options = {"strategy": spec.get("strategy", "round_robin")}
    if "etcd" in spec:
        options.update(discovery=fastrpc.EtcdDiscovery(spec["etcd"], timeout=1.0), service=spec["service"])
    if "origin" in spec:
        options["origin"] = tuple(spec["origin"])
    options.update(spec.get("options", {}))
    calls = []
    lock = threading.Lock()
    with fastrpc.Balancer(endpoints, **options, idempotent=True, timeout=0.6,
                          connect_timeout=0.3, heartbeat=0.2, heartbeat_timeout=0.3,
                          health_interval=0.2, health_timeout=0.3, health_misses=2,
                          eject_failures=2, eject_base=0.5, eject_max=1.0, max_attempts=3) as b:
        b.call("Arith.Pid")                      # connected before the clock starts
        deadline = [time.monotonic() + seconds]

        def stop_on_request():
            for line in sys.stdin:               # "stop" ends the run early
                if line.strip() == "stop":
                    deadline[0] = time.monotonic()
                    return

        threading.Thread(target=stop_on_request, daemon=True).start()
        seen = []                                # (when, addresses) each time the set changed

        def watch():
            last = None
            while time.monotonic() < deadline[0]:
                now = sorted(e.address for e in b.endpoints)
                if now != last:
                    seen.append((time.monotonic(), now))
                    last = now
                time.sleep(0.02)

        def work():
            while time.monotonic() < deadline[0]:
                started = time.monotonic()
                try:
                    outcome = b.call("Arith.Pid")
                except fastrpc.RPCError as exc:
                    outcome = f"{type(exc).__name__}: {exc}"
                with lock:
                    calls.append((started, time.monotonic() - started, outcome))
                time.sleep(0.002)                # a steady, bounded load

        threads = [threading.Thread(target=work) for _ in range(4)] + [threading.Thread(target=watch)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    print(json.dumps({"calls": calls, "endpoints": seen}), flush=True)


if __name__ == "__main__":
    main()
