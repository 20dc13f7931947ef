"""A multi-host test bed: hosts as Linux network namespaces on a bridge of their own.

``with Fleet(["paris", "tokyo"]) as fleet:`` makes one namespace per host,
each with a veth pair into a bridge the fleet creates and an address in a
private /24 that exists only inside those namespaces; ``fleet["paris"].popen(argv)``
runs a process there; ``host.down()`` / ``host.up()`` take its link down
and back (a partition). Everything is removed on exit, also after a failure
or an interrupted test. Needs root and iproute2 (``ip``); without them the
fleet raises FleetBedError saying what is missing (tests fail, not skip).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

__all__ = ["Fleet", "FleetBedError", "Host", "LinkProxy"]

LINKPROXY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "linkproxy.py")


class FleetBedError(RuntimeError):
    """The machine cannot host the test bed (not root, no iproute2, no netns)."""


def _ip(*args, check=True):
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if check and result.returncode != 0:
        raise FleetBedError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def check_prerequisites():
    """Raise FleetBedError naming what the test bed lacks."""
    if sys.platform != "linux":
        raise FleetBedError("the multi-host test bed needs Linux network namespaces")
    if os.geteuid() != 0:
        raise FleetBedError("the multi-host test bed needs root (ip netns, veth, bridge)")
    if shutil.which("ip") is None:
        raise FleetBedError("the multi-host test bed needs iproute2's `ip` (apt-get install iproute2)")


class Host:
    """One namespace of a Fleet: `name`, `ip` (its address), and processes run in it."""

    def __init__(self, fleet, name, netns, veth, ip, inside):
        self.fleet = fleet
        self.name = name
        self.netns = netns
        self.veth = veth                    # its link's end on the bridge
        self.inside = inside                # the end inside its namespace
        self.ip = ip
        self.processes = []

    def address(self, port):
        """A tcp:// address of this host."""
        return f"tcp://{self.ip}:{port}"

    def command(self, argv):
        """`argv` as run inside this host's namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def popen(self, argv, **kwargs):
        """Start `argv` in this host (a subprocess.Popen, stopped with every
        process it started when the fleet closes: it leads a session of its own)."""
        proc = subprocess.Popen(self.command(argv), start_new_session=True, **kwargs)
        self.processes.append(proc)
        return proc

    def run(self, argv, timeout=60, **kwargs):
        """Run `argv` in this host to completion (subprocess.run, output captured)."""
        return subprocess.run(self.command(argv), capture_output=True, text=True, timeout=timeout, **kwargs)

    def down(self):
        """Cut this host off: its link to the bridge goes down (a partition)."""
        _ip("link", "set", self.veth, "down")

    def up(self, wait=10.0):
        """Heal a partition: the link comes back. Returns once both ends carry
        traffic and the bridge forwards it: the kernel reports a carrier
        change up to a second late (its link watch is rate-limited), and
        until then packets are dropped, so a connect at once could fail."""
        _ip("link", "set", self.veth, "up")
        deadline = time.monotonic() + wait
        while not self.link_ready():
            if time.monotonic() > deadline:
                raise FleetBedError(f"the link of {self.name} did not come back up within {wait} s")
            time.sleep(0.02)

    def link_ready(self):
        """Whether this host's link carries traffic: both ends up, the bridge port forwarding."""
        outside = _ip("-o", "link", "show", self.veth, check=False).stdout
        inside = _ip("-n", self.netns, "-o", "link", "show", self.inside, check=False).stdout
        try:
            with open(f"/sys/class/net/{self.veth}/brport/state") as f:
                forwarding = f.read().strip() == "3"     # BR_STATE_FORWARDING
        except OSError:
            forwarding = False
        return "state UP" in outside and "state UP" in inside and forwarding

    def stop_processes(self):
        for proc in self.processes:
            try:
                os.killpg(proc.pid, signal.SIGKILL)       # its children too (workers of a supervisor)
            except ProcessLookupError:
                pass
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self.processes.clear()


class Fleet:
    """Hosts as network namespaces on one bridge; a context manager that
    removes all it made."""

    def __init__(self, names, subnet=None):
        check_prerequisites()
        self.tag = uuid.uuid4().hex[:6]
        # A /24 in 10.200.0.0/13 of our own; the tag keeps parallel fleets apart.
        third = int(self.tag[:2], 16)
        second = 200 + int(self.tag[2], 16) % 8
        self.subnet = subnet or f"10.{second}.{third}"
        self.bridge = f"frb{self.tag}"
        self.hosts = {}
        self._names = list(names)
        if len(self._names) > 250:
            raise ValueError("a fleet has at most 250 hosts")

    def __enter__(self):
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("link", "set", self.bridge, "up")
            for i, name in enumerate(self._names):
                self._add_host(i + 1, name)
        except BaseException:
            self.close()
            raise
        return self

    def _add_host(self, number, name):
        netns = f"frn{self.tag}{number}"
        outside, inside = f"frv{self.tag}{number}", f"fri{self.tag}{number}"
        _ip("netns", "add", netns)
        host = Host(self, name, netns, outside, f"{self.subnet}.{number}", inside)
        self.hosts[name] = host
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", netns)
        _ip("link", "set", outside, "master", self.bridge)
        _ip("link", "set", outside, "up")
        _ip("-n", netns, "addr", "add", f"{host.ip}/24", "dev", inside)
        _ip("-n", netns, "link", "set", inside, "up")
        _ip("-n", netns, "link", "set", "lo", "up")

    def __getitem__(self, name):
        return self.hosts[name]

    def close(self):
        """Stop every process started in the fleet and remove its namespaces,
        links and bridge."""
        for host in self.hosts.values():
            host.stop_processes()
        for host in self.hosts.values():
            _ip("link", "del", host.veth, check=False)
            _ip("netns", "del", host.netns, check=False)
        _ip("link", "del", self.bridge, check=False)

    def __exit__(self, *exc):
        self.close()


class LinkProxy:
    """A tests/linkproxy.py process: a link with delay, jitter, loss or
    silence between a listening address and a target, in `host` (a fleet
    host) or on this machine. ``address`` is where to connect."""

    def __init__(self, listen, target, host=None):
        argv = [sys.executable, LINKPROXY, listen, target]
        popen = host.popen if host is not None else subprocess.Popen
        self.proc = popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = self.proc.stdout.readline().split()
        if len(ready) != 2 or ready[0] != "ready":
            self.close()
            raise RuntimeError(f"link proxy did not start: {ready}")
        self.address = "tcp://" + ready[1]

    def set(self, **settings):
        """Change the link now (delay, jitter, loss, rto in seconds; blackhole; reset)."""
        self.proc.stdin.write(json.dumps(settings) + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        if answer != "ok":
            raise ValueError(answer)

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
