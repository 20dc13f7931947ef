"""The multi-host test bed itself: hosts reach each other only through it, a partition cuts one off,
everything is removed afterwards (also after a failure), and missing prerequisites fail loudly."""
import os
import subprocess
import sys

import pytest

from fleetbed import Fleet

HERE = os.path.dirname(os.path.abspath(__file__))

CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()
    print("connected")
except OSError as exc:
    print(type(exc).__name__)
"""


def netns_names():
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_hosts_reach_each_other_until_a_partition_and_everything_goes_away():
    with Fleet(["a", "b"]) as fleet:
        a, b = fleet["a"], fleet["b"]
        listener = b.popen([sys.executable, "-c",
                            f"import socket,time; s=socket.create_server(('{b.ip}', 9000)); print('up', flush=True); "
                            "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
        assert listener.stdout.readline().strip() == "up"
        assert a.run([sys.executable, "-c", CONNECT, b.ip, "9000"]).stdout.strip() == "connected"
        # The fleet's addresses exist only inside its namespaces: none here, none on its bridge.
        here = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
        assert fleet.subnet + "." not in here
        b.down()
        assert a.run([sys.executable, "-c", CONNECT, b.ip, "9000"]).stdout.strip() != "connected"
        b.up()
        assert a.run([sys.executable, "-c", CONNECT, b.ip, "9000"]).stdout.strip() == "connected"
        names = [h.netns for h in fleet.hosts.values()]
        assert all(n in netns_names() for n in names)
    assert not any(n in netns_names() for n in names)
    assert listener.poll() is not None                     # its processes were stopped


def test_a_failing_test_leaves_nothing_behind():
    with pytest.raises(RuntimeError):
        with Fleet(["a"]) as fleet:
            names = [h.netns for h in fleet.hosts.values()]
            bridge = fleet.bridge
            raise RuntimeError("the test failed")
    assert not any(n in netns_names() for n in names)
    assert bridge not in subprocess.run(["ip", "link", "show"], capture_output=True, text=True).stdout


def test_missing_iproute2_is_a_clear_failure():
    result = subprocess.run([sys.executable, "-c", "import fleetbed; fleetbed.Fleet(['a'])"], cwd=HERE,
                            capture_output=True, text=True, env={**os.environ, "PATH": "/nonexistent"})
    assert result.returncode != 0
    assert "FleetBedError" in result.stderr and "iproute2" in result.stderr
