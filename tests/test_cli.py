"""The installed `fastrpc` command, run as a subprocess: serve (one process and
--workers), call, list, describe, ping, bench, registry; against fastrpc
servers and a real Go net/rpc server; errors as one line and an exit code."""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

import fastrpc
from gointerop import GoServer, build_go_program
from support import wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
ENV = {**os.environ, "PYTHONPATH": HERE + os.pathsep + os.environ.get("PYTHONPATH", "")}


def fastrpc_command():
    path = shutil.which("fastrpc")
    assert path is not None, "the fastrpc console script is not installed (pip install .)"
    return path


def cli(*args, timeout=60, expect=0):
    """Run `fastrpc ARGS`; assert its exit code; return (stdout, stderr)."""
    out = subprocess.run([fastrpc_command(), *args], capture_output=True, text=True, timeout=timeout, env=ENV,
                         cwd=HERE)
    assert out.returncode == expect, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    return out.stdout, out.stderr


def cli_input(text, *args, timeout=60, expect=0):
    """cli() with `text` on standard input."""
    out = subprocess.run([fastrpc_command(), *args], input=text, capture_output=True, text=True,
                         timeout=timeout, env=ENV, cwd=HERE)
    assert out.returncode == expect, (out.returncode, out.stdout, out.stderr)
    return out.stdout, out.stderr


class Serving:
    """A `fastrpc serve ...` process; `address` is the first line it printed."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([fastrpc_command(), "--log-level", "WARNING", "serve", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=HERE)
        line = self.proc.stdout.readline()
        if not line:
            self.proc.kill()
            raise AssertionError(f"fastrpc serve did not start: {self.proc.stderr.read()}")
        self.addresses = line.split()
        self.address = self.addresses[0]

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


@pytest.fixture(scope="module")
def served():
    s = Serving("cli_targets:Arith", "--listen", "tcp://127.0.0.1:0", "--listen", "tcp://127.0.0.1:0")
    yield s
    assert s.stop() == 0


def test_help_on_every_subcommand():
    out, _ = cli("--help")
    for command in ("serve", "call", "list", "describe", "ping", "bench", "registry"):
        assert command in out
        sub, _ = cli(command, "--help")
        assert sub.startswith("usage: fastrpc " + command)
    module = subprocess.run([sys.executable, "-m", "fastrpc", "--version"], capture_output=True, text=True,
                            timeout=60)
    assert module.returncode == 0 and module.stdout.strip() == f"fastrpc {fastrpc.__version__}"


def test_serve_listens_on_every_address(served):
    assert len(served.addresses) == 2
    for address in served.addresses:
        with fastrpc.Client(address) as c:
            assert c.call("Arith.Sum", 1, 2) == 3


def test_call_prints_the_result_as_json(served):
    out, _ = cli("call", served.address, "Arith.Sum", "10", "20")
    assert json.loads(out) == 30
    out, _ = cli("call", served.address, "Arith.Echo", '{"a": [1, "x", null]}')
    assert json.loads(out) == {"a": [1, "x", None]}
    out, _ = cli("call", served.address, "Arith.Echo", '"v"', "--kw", 'tag="t"', "--metadata", "trace=1")
    assert json.loads(out) == ["v", "t"]


@pytest.mark.parametrize("args, expect, message", [
    (["Arith.Nope"], 1, "fastrpc call: MethodNotFound: rpc: can't find method Arith.Nope"),
    (["Arith.Sum", "1"], 1, "fastrpc call: InvalidArguments: Arith.Sum takes 2 arguments (1 given)"),
    (["Arith.Fail", '"broken"'], 1, "fastrpc call: ValueError: broken"),
    (["Arith.Sum", "one", "2"], 2, "fastrpc call: 'one' is not JSON"),
    (["Arith.Sum", "1", "--kw", "b"], 2, "fastrpc call: --kw 'b' is not key=value"),
])
def test_call_errors_are_one_line_and_an_exit_code(served, args, expect, message):
    _, err = cli("call", served.address, *args, expect=expect)
    assert err.strip().splitlines() == [message] or err.strip().splitlines()[0].startswith(message), err


def test_an_unreachable_server_is_one_line():
    _, err = cli("call", "tcp://127.0.0.1:1", "Arith.Sum", "1", "2", "--timeout", "2", expect=1)
    assert err.strip() == "fastrpc call: ConnectError: cannot connect to tcp://127.0.0.1:1: Connection refused"
    _, err = cli("call", "nonsense::", "A.B", expect=1)
    assert err.startswith("fastrpc call: ValueError:") and len(err.strip().splitlines()) == 1


def test_call_streams(served):
    out, _ = cli("call", served.address, "Arith.Count", "3", "--stream")
    assert out.splitlines() == ["0", "1", "2"]
    out, _ = cli_input("1\n2\n3\n", "call", served.address, "Arith.Total", "--send-stdin")
    assert out.splitlines() == ["6"]
    out, _ = cli_input("1\n2\n", "call", served.address, "Arith.Double", "--send-stdin")
    assert out.splitlines() == ["2", "4"]
    _, err = cli("call", served.address, "Arith.Count", "3", expect=1)
    assert "is a streaming method: call it with stream()" in err


def test_list_and_describe_come_from_reflection(served):
    out, _ = cli("list", served.address)
    assert out.splitlines()[0] == "Arith"
    assert "  Sum(a: int, b: int) -> int  [inline]" in out.splitlines()
    assert "  Slow(seconds: float, value)  [async]" in out.splitlines()
    described = json.loads(cli("list", served.address, "--json")[0])
    assert described["Arith"]["doc"] == "Arithmetic for the command-line tests."
    method = json.loads(cli("describe", served.address, "Arith.Sum")[0])["Arith"]["methods"]["Sum"]
    assert method == {"params": [{"name": "a", "kind": "positional_or_keyword", "annotation": "int"},
                                 {"name": "b", "kind": "positional_or_keyword", "annotation": "int"}],
                      "returns": "int", "doc": "The sum of a and b.", "mode": "inline", "stream": None}
    assert "  Count(n: int) -> Iterator[int]  [inline, server stream]" in out.splitlines()
    assert "  Total(items: Iterator[int]) -> int  [blocking, client stream]" in out.splitlines()
    assert "  Double(items: Iterator[int]) -> Iterator[int]  [blocking, bidirectional stream]" in out.splitlines()
    _, err = cli("describe", served.address, "Nope", expect=1)
    assert "no service or method named 'Nope'" in err


def test_ping(served):
    out, _ = cli("ping", served.address, "--count", "3", "--interval", "0.01")
    result = json.loads(out)
    assert result["address"] == served.address and len(result["rtt_ms"]) == 3
    assert all(0 < r < 5000 for r in result["rtt_ms"])


def test_bench_closed_and_open_loop(served):
    closed = json.loads(cli("bench", served.address, "Arith.Sum", "1", "2", "--duration", "0.5",
                            "--concurrency", "16", "--connections", "2", "--json")[0])
    assert closed["mode"] == "closed" and closed["calls"] > 100 and closed["errors"] == {}
    lat = closed["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"]
    opened = json.loads(cli("bench", served.address, "Arith.Sum", "1", "2", "--duration", "0.5",
                            "--rate", "400", "--json")[0])
    assert opened["mode"] == "open" and opened["calls"] == 200 and opened["errors"] == {}
    # Open loop: a server that takes 50 ms per call is charged from each call's intended time.
    slow = json.loads(cli("bench", served.address, "Arith.Slow", "0.05", "1", "--duration", "0.5",
                          "--rate", "100", "--json")[0])
    assert slow["calls"] == 50 and slow["latency_ms"]["p50"] >= 50
    text, _ = cli("bench", served.address, "Arith.Sum", "1", "2", "--duration", "0.2")
    assert text.splitlines()[0].split() == ["calls", "calls/s", "errors", "p50", "ms", "p90", "ms", "p99", "ms",
                                            "p99.9", "ms"]
    _, err = cli("bench", served.address, "Arith.Nope", "--duration", "0.2", expect=1)
    assert "can't find method" in err


def test_bench_through_a_balancer(served):
    out, _ = cli("bench", ",".join(served.addresses), "Arith.Sum", "1", "2", "--duration", "0.5",
                 "--balancer", "round_robin", "--json")
    result = json.loads(out)
    assert set(result["per_endpoint"]) == set(served.addresses)
    assert all(n > 10 for n in result["per_endpoint"].values())


def test_registry_ls_and_watch_a_file(tmp_path):
    path = tmp_path / "endpoints.json"
    path.write_text(json.dumps({"arith": ["tcp://10.0.0.1:7001"], "kv": [{"address": "tcp://10.0.0.2:7001",
                                                                          "weight": 2}]}))
    out, _ = cli("registry", "ls", "--file", str(path))
    assert json.loads(out) == {"arith": [{"address": "tcp://10.0.0.1:7001", "weight": 1.0}],
                               "kv": [{"address": "tcp://10.0.0.2:7001", "weight": 2.0}]}
    proc = subprocess.Popen([fastrpc_command(), "registry", "watch", "--file", str(path), "--service", "arith",
                             "--seconds", "20"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        assert json.loads(proc.stdout.readline()) == {"arith": [{"address": "tcp://10.0.0.1:7001", "weight": 1.0}]}
        path.with_suffix(".tmp").write_text(json.dumps({"arith": ["tcp://10.0.0.3:7001"]}))
        os.replace(path.with_suffix(".tmp"), path)
        assert json.loads(proc.stdout.readline()) == {"arith": [{"address": "tcp://10.0.0.3:7001", "weight": 1.0}]}
    finally:
        proc.kill()
        proc.wait()
    _, err = cli("registry", "ls", expect=2)
    assert "give --etcd URL or --file PATH" in err


@pytest.fixture(scope="module")
def go_server(tmp_path_factory):
    server = GoServer(build_go_program(str(tmp_path_factory.mktemp("go"))))
    yield server.addresses
    server.close()


@pytest.mark.parametrize("codec", ["gob", "jsonrpc"])
def test_call_and_ping_a_go_server(go_server, codec):
    address = "tcp://" + go_server[codec]
    out, _ = cli("call", address, "Arith.Sum", '{"A": 7, "B": 8}', "--codec", codec)
    assert json.loads(out) == 15
    out, _ = cli("call", address, "Arith.Sum", "--kw", "A=1", "--kw", "B=2", "--codec", codec)
    assert json.loads(out) == 3
    json.loads(cli("ping", address, "--codec", codec)[0])
    _, err = cli("call", address, "Arith.Nope", "{}", "--codec", codec, expect=1)
    assert "can't find method Arith.Nope" in err
    out, _ = cli("bench", address, "Arith.Sum", '{"A": 1, "B": 2}', "--codec", codec, "--duration", "0.3",
                 "--json")
    assert json.loads(out)["errors"] == {}


def test_serve_speaks_gob_for_go_callers(go_server):
    s = Serving("cli_targets:Arith", "--listen", "tcp://127.0.0.1:0", "--codec", "gob")
    try:
        with fastrpc.Client(s.address, codec="gob") as c:
            assert c.call("Arith.Sum", {"A": 2, "B": 3}) == 5
    finally:
        assert s.stop() == 0


def test_serve_usage_errors():
    for args, message in [(["nomodule:X"], "cannot import nomodule"), (["cli_targets:Nope"], "cli_targets has no Nope"),
                          (["cli_targets"], "is not pkg.module:object")]:
        _, err = cli("serve", *args, "--listen", "tcp://127.0.0.1:0", expect=2)
        assert message in err


def run_load(addresses, stop, results, errors, connections=4, window=8):
    """Keep `window` Arith.Slow calls in flight on each of `connections` clients until `stop` is set."""
    def worker(k):
        with fastrpc.Client(addresses[k % len(addresses)], timeout=30) as c:
            i = 0
            pending = []
            while not stop.is_set():
                pending = [f for f in pending if not f.done()] + [c.go("Arith.Slow", 0.2, (k, i))]
                i += 1
                while len(pending) >= window and not stop.is_set():
                    time.sleep(0.005)
                    pending = [f for f in pending if not f.done()]
            for f in pending:
                try:
                    results.append(f.result(30))
                except Exception as exc:        # reported, and the test fails
                    errors.append(exc)
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(connections)]
    for t in threads:
        t.start()
    return threads


def test_workers_share_the_port_and_drain_on_sigterm_under_load():
    s = Serving("cli_targets:Arith", "--listen", "tcp://127.0.0.1:0", "--workers", "2", "--grace", "10")
    try:
        pids = set()
        clients = [fastrpc.Client(s.address) for _ in range(16)]
        for c in clients:
            pids.add(c.call("Arith.Pid"))
            c.close()
        assert len(pids) == 2                           # connections are spread over both workers
        stop, results, errors = threading.Event(), [], []
        threads = run_load([s.address], stop, results, errors)
        time.sleep(0.5)                                 # calls in flight on every connection
        stop.set()
        time.sleep(0.05)                                # nothing new is being issued
        assert s.stop(signal.SIGTERM) == 0              # the workers drained, the supervisor exits 0
        for t in threads:
            t.join(30)
        assert errors == [] and len(results) > 0
    finally:
        if s.proc.poll() is None:
            s.proc.kill()


def test_a_worker_that_dies_is_started_again():
    s = Serving("cli_targets:Arith", "--listen", "tcp://127.0.0.1:0", "--workers", "2")
    try:
        with fastrpc.Client(s.address) as c:
            victim = c.call("Arith.Pid")
        os.kill(victim, signal.SIGKILL)

        def two_workers_answer():
            pids = set()
            for _ in range(16):
                try:
                    with fastrpc.Client(s.address, timeout=5) as c:
                        pids.add(c.call("Arith.Pid"))
                except fastrpc.RPCError:
                    pass
            return len(pids) == 2 and victim not in pids
        assert wait_until(two_workers_answer, timeout=20, interval=0.2)
    finally:
        assert s.stop() == 0
    assert "exited with code -9; starting another" in s.proc.stderr.read()


def test_workers_report_one_coherent_set_of_metrics():
    from prometheus_client.parser import text_string_to_metric_families
    s = Serving("cli_targets:Arith", "--listen", "tcp://127.0.0.1:0", "--workers", "2",
                "--metrics", "http://127.0.0.1:0")
    try:
        metrics = next(a for a in s.addresses if a.startswith("metrics="))[len("metrics="):]
        pids, calls = set(), 0
        for _ in range(12):                             # connections land on both workers
            with fastrpc.Client(s.address) as c:
                pids.add(c.call("Arith.Pid"))
                for i in range(5):
                    assert c.call("Arith.Sum", i, 1) == i + 1
                with pytest.raises(ValueError):
                    c.call("Arith.Fail", "no")
                calls += 1
        assert len(pids) == 2
        with urllib.request.urlopen(metrics + "/metrics", timeout=10) as reply:
            text = reply.read().decode()
        f = {m.name: m for m in text_string_to_metric_families(text)}

        def total(name, suffix, **labels):
            return sum(x.value for x in f[name].samples if x.name == name + suffix
                       and all(x.labels.get(k) == v for k, v in labels.items()))
        assert total("fastrpc_server_calls", "_total", method="Arith.Sum") == 5 * calls   # both workers, summed
        assert total("fastrpc_server_calls", "_total", method="Arith.Pid") == calls
        assert total("fastrpc_server_errors", "_total", method="Arith.Fail", error_type="ValueError") == calls
        assert total("fastrpc_server_call_duration_seconds", "_count", method="Arith.Sum") == 5 * calls
        assert total("fastrpc_server_accepted_connections", "_total") >= calls
        with urllib.request.urlopen(metrics + "/status?format=json", timeout=10) as reply:
            status = json.loads(reply.read())
        assert status["workers"] == 2 and status["missing"] == []
        (server,) = status["servers"]
        assert {m["method"]: m["calls"] for m in server["methods"]}["Arith.Sum"] == 5 * calls
        with urllib.request.urlopen(metrics + "/status", timeout=10) as reply:
            assert "2 workers" in reply.read().decode()
    finally:
        assert s.stop() == 0


def test_workers_register_once_in_etcd_and_leave_on_sigterm(tmp_path):
    from support import etcd_process
    with etcd_process(str(tmp_path / "etcd")) as etcd:
        s = Serving("cli_targets:Arith", "--listen", "tcp://127.0.0.1:0", "--workers", "2",
                    "--etcd", etcd.url, "--service", "arith")
        try:
            listed = json.loads(cli("registry", "ls", "--etcd", etcd.url)[0])
            assert listed == {"arith": [{"address": s.address, "weight": 1.0}]}     # one endpoint, two workers
            with fastrpc.Balancer(discovery=fastrpc.EtcdDiscovery(etcd.url), service="arith",
                                  health_interval=0) as b:
                assert b.call("Arith.Sum", 2, 2) == 4
        finally:
            assert s.stop() == 0
        assert json.loads(cli("registry", "ls", "--etcd", etcd.url, "--service", "arith")[0]) == {"arith": []}


def test_bench_every_strategy_as_a_table(served):
    out, _ = cli("bench", ",".join(served.addresses), "Arith.Sum", "1", "2", "--duration", "0.2",
                 "--balancer", "all")
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["strategy", "calls/s", "p50", "ms"]
    assert {line.split()[0] for line in lines[1:]} == set(fastrpc.STRATEGIES) - {"geo"}


def test_list_against_a_go_server_says_there_is_no_reflection(go_server):
    _, err = cli("list", "tcp://" + go_server["gob"], "--codec", "gob", expect=1)
    assert "Go's net/rpc has no reflection" in err


def test_serve_takes_its_settings_from_the_environment():
    env = {**ENV, "FASTRPC_LISTEN": "tcp://127.0.0.1:0,tcp://127.0.0.1:0", "FASTRPC_CODEC": "jsonrpc",
           "FASTRPC_GRACE": "1"}
    proc = subprocess.Popen([fastrpc_command(), "serve", "cli_targets:Arith"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=HERE)
    try:
        addresses = proc.stdout.readline().split()
        assert len(addresses) == 2
        with fastrpc.Client(addresses[1], codec="jsonrpc") as c:
            assert c.call("Arith.Sum", 3, 4) == 7
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
