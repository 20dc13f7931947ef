"""``fastrpc``: the command line (see ``fastrpc --help``).

Every subcommand prints what a program would read as JSON on stdout (list
prints text unless --json), reports a failure as one line on stderr with a
non-zero exit code (1: the call or the connection failed; 2: the command
line is wrong), and never shows a traceback.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import fastrpc
from fastrpc.cli import bench as benchmarks
from fastrpc.cli.output import Progress, format_table, to_json
from fastrpc.cli.serve import UsageError, serve
from fastrpc.errors import MethodNotFoundError, RemoteError, RPCError

__all__ = ["main", "run"]

log = logging.getLogger("fastrpc.cli")


def _env(name: str, default: Any = None) -> Any:
    return os.environ.get(f"FASTRPC_{name}", default)


def _json_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{text!r} is not JSON ({exc.msg}); quote strings: '\"text\"'") from None


def _pairs(items: Optional[List[str]], what: str, parse: Any = str) -> Dict[str, Any]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{what} {item!r} is not key=value")
        out[key] = parse(value)
    return out


def _client_options(args: argparse.Namespace) -> Dict[str, Any]:
    options: Dict[str, Any] = {"timeout": args.timeout, "connect_timeout": min(args.timeout or 10.0, 10.0)}
    if args.codec != "fastrpc":
        options["codec"] = args.codec
    if getattr(args, "metadata", None):
        options["metadata"] = _pairs(args.metadata, "--metadata")
    if args.tls_ca or args.tls_cert:
        import ssl
        context = ssl.create_default_context(cafile=args.tls_ca)
        if args.tls_cert:
            context.load_cert_chain(args.tls_cert, args.tls_key)
        options["ssl"] = context
    if args.auth_secret_file:
        with open(args.auth_secret_file, "rb") as f:
            options["auth_secret"] = f.read().strip()
    return options


def _client(args: argparse.Namespace, address: Optional[str] = None) -> Any:
    return fastrpc.Client(address or args.address, **_client_options(args))


# subcommands ------------------------------------------------------------------------------
def cmd_call(args: argparse.Namespace) -> int:
    positional = [_json_arg(a) for a in args.args]
    keywords = _pairs(args.kw, "--kw", _json_arg)
    call_args = (fastrpc.Arguments(*positional, **keywords),) if keywords else tuple(positional)
    with _client(args) as client:
        if args.stream or args.send_stdin:
            return _stream(client, args.method, call_args, args.send_stdin)
        result = client.call(args.method, *call_args)
    print(to_json(result))
    return 0


def _stream(client: Any, method: str, call_args: Tuple[Any, ...], send_stdin: bool) -> int:
    """`call --stream`: each item the server streams as a JSON line, then the
    handler's return value unless it is null; with --send-stdin, each line of
    standard input (JSON) is an item sent to the handler."""
    items = (_json_arg(line) for line in sys.stdin if line.strip()) if send_stdin else None
    stream = client.stream(method, *call_args, send=items)
    for item in stream:
        print(to_json(item), flush=True)
    result = stream.result()
    if result is not None:
        print(to_json(result))
    return 0


def _signature(name: str, method: Dict[str, Any]) -> str:
    parts = []
    for p in method["params"]:
        text = {"var_positional": "*", "var_keyword": "**"}.get(p["kind"], "") + p["name"]
        if "annotation" in p:
            text += f": {p['annotation']}"
        if "default" in p:
            text += f" = {p['default']}"
        parts.append(text)
    returns = f" -> {method['returns']}" if method.get("returns") else ""
    return f"{name}({', '.join(parts)}){returns}"


def _describe(args: argparse.Namespace, name: Optional[str] = None) -> Any:
    if args.codec != "fastrpc":
        raise NoReflection(f"Go's net/rpc has no reflection: {args.address} cannot say what it serves "
                           f"(its /debug/rpc page, on an HTTP listener, lists the methods)")
    with _client(args) as client:
        try:
            return client.describe(name)
        except MethodNotFoundError:
            raise NoReflection(f"{args.address} serves no reflection (a Go net/rpc server, or a fastrpc "
                               f"server with reflection=False): call its methods by name") from None


class NoReflection(RPCError):
    """The server answers no reflection calls."""


def cmd_list(args: argparse.Namespace) -> int:
    described = _describe(args)
    if args.json:
        print(to_json(described))
        return 0
    for service in sorted(described):
        print(service)
        for name, method in sorted(described[service]["methods"].items()):
            streams = f", {method['stream']} stream" if method.get("stream") else ""
            print(f"  {_signature(name, method)}  [{method['mode']}{streams}]")
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    print(to_json(_describe(args, args.name)))
    return 0


def cmd_ping(args: argparse.Namespace) -> int:
    with _client(args) as client:
        rtts = []
        for i in range(args.count):
            rtts.append(client.ping(args.timeout or 5.0))
            if i + 1 < args.count:
                time.sleep(args.interval)
    print(to_json({"address": args.address, "rtt_ms": [round(r * 1000, 3) for r in rtts]}))
    return 0


def _load(args: argparse.Namespace, callers: List[Any], call_args: List[Any]) -> Dict[str, Any]:
    """One run of the load --rate (open loop) or --concurrency (closed loop) asks for."""
    progress = Progress(args.duration)
    if args.rate is not None:
        return benchmarks.open_loop(callers, args.method, call_args, args.rate, args.duration, progress)
    return benchmarks.closed_loop(callers, args.method, call_args, args.concurrency, args.duration, progress)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.rate is not None and args.rate <= 0:
        raise UsageError("--rate must be > 0 calls per second")
    if args.concurrency < 1 or args.connections < 1 or args.duration <= 0:
        raise UsageError("--concurrency and --connections must be >= 1, --duration > 0")
    call_args = [_json_arg(a) for a in args.args]
    addresses = [a for a in args.address.split(",") if a]
    options = _client_options(args)
    if args.balancer == "all":
        return bench_strategies(args, addresses, call_args, options)
    if args.balancer:
        callers: List[Any] = [fastrpc.Balancer(addresses, strategy=args.balancer, health_interval=0, **options)]
    else:
        if len(addresses) != 1:
            raise UsageError("several addresses need --balancer STRATEGY")
        callers = [fastrpc.Client(addresses[0], **options) for _ in range(args.connections)]
    try:
        callers[0].call(args.method, *call_args)          # fail fast: unknown method, bad arguments
        result = _load(args, callers, call_args)
        if args.balancer:
            result["per_endpoint"] = {address: s["calls"] for address, s in callers[0].stats().items()}
    finally:
        for caller in callers:
            caller.close()
    if args.json:
        print(to_json(result))
    else:
        lat = result["latency_ms"]
        rows = [["calls", "calls/s", "errors", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms"],
                [f"{result['calls']:,}", f"{result['calls_per_second']:,.0f}", str(sum(result["errors"].values())),
                 *(f"{lat[k]:.3f}" for k in ("p50", "p90", "p99", "p99.9"))]]
        print(format_table(rows))
        if args.balancer:
            print(format_table([["endpoint", "calls"]] + [[a, f"{n:,}"] for a, n in result["per_endpoint"].items()]))
    return 0


def bench_strategies(args: argparse.Namespace, addresses: List[str], call_args: List[Any],
                     options: Dict[str, Any]) -> int:
    """--balancer all: every strategy in turn over `addresses`, as the demo's table."""
    if len(addresses) < 2:
        raise UsageError("--balancer all needs several comma-separated addresses")
    rows: Dict[str, Dict[str, Any]] = {}
    for strategy in sorted(fastrpc.STRATEGIES):
        if strategy == "geo":           # needs coordinates a bare address does not have
            continue
        with fastrpc.Balancer(addresses, strategy=strategy, health_interval=0, **options) as balancer:
            balancer.call(args.method, *call_args)
            run = _load(args, [balancer], call_args)
            calls = {address: s["calls"] for address, s in balancer.stats().items()}
        total = sum(calls.values()) or 1
        run["share"] = {address: round(n / total, 4) for address, n in calls.items()}
        rows[strategy] = run
    if args.json:
        print(to_json(rows))
        return 0
    table = [["strategy", "calls/s", "p50 ms", "p99 ms", *addresses]]
    for strategy, run in rows.items():
        table.append([strategy, f"{run['calls_per_second']:,.0f}", f"{run['latency_ms']['p50']:.3f}",
                      f"{run['latency_ms']['p99']:.3f}", *(f"{run['share'][a]:.0%}" for a in addresses)])
    print(format_table(table))
    return 0


def cmd_registry(args: argparse.Namespace) -> int:
    if bool(args.etcd) == bool(args.file):
        raise UsageError("give --etcd URL or --file PATH")
    source: Any = fastrpc.EtcdDiscovery(args.etcd) if args.etcd else fastrpc.FileDiscovery(args.file)
    services = [args.service] if args.service else source.services()

    def snapshot() -> Dict[str, Any]:
        return {s: [_endpoint(e) for e in source.endpoints(s)] for s in services}
    if args.action == "ls":
        print(to_json(snapshot()))
        return 0
    if not args.service:
        raise UsageError("watch needs --service")
    print(json.dumps(snapshot()), flush=True)
    watch = source.watch(args.service, lambda eps: print(json.dumps({args.service: [_endpoint(e) for e in eps]}),
                                                         flush=True))
    try:
        deadline = None if args.seconds is None else time.monotonic() + args.seconds
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    finally:
        watch.stop()
    return 0


def _endpoint(e: fastrpc.Endpoint) -> Dict[str, Any]:
    out: Dict[str, Any] = {"address": e.address, "weight": e.weight}
    for key in ("zone", "lat", "lon"):
        if getattr(e, key) is not None:
            out[key] = getattr(e, key)
    if e.metadata:
        out["metadata"] = e.metadata
    return out


# the parser ------------------------------------------------------------------------------
def _client_flags(p: argparse.ArgumentParser, timeout: Optional[float] = 10.0) -> None:
    p.add_argument("--timeout", type=float, default=timeout, help="seconds per call (default %(default)s)")
    p.add_argument("--codec", choices=["fastrpc", "gob", "jsonrpc"], default="fastrpc",
                   help="the server's protocol: fastrpc's, or Go net/rpc's gob or jsonrpc")
    p.add_argument("--tls-ca", help="CA file: connect with TLS and verify the server against it")
    p.add_argument("--tls-cert", help="client certificate (mutual TLS)")
    p.add_argument("--tls-key", help="client certificate's key")
    p.add_argument("--auth-secret-file", help="file holding the server's shared secret")


def parser() -> argparse.ArgumentParser:
    """The argument parser of the ``fastrpc`` command."""
    top = argparse.ArgumentParser(prog="fastrpc", description="Serve, call and measure fastrpc services "
                                  "(and Go net/rpc servers) from the shell.")
    top.add_argument("--version", action="version", version=f"fastrpc {fastrpc.__version__}")
    top.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"),
                     help="logging level on stderr (default %(default)s; FASTRPC_LOG_LEVEL)")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("serve", help="serve objects: fastrpc serve pkg.module:obj --listen tcp://0.0.0.0:7001",
                       description="Serve the public methods of objects (a class is instantiated once per "
                       "worker). Every option may also come from a FASTRPC_* variable (FASTRPC_LISTEN, "
                       "FASTRPC_WORKERS...). SIGTERM or SIGINT drains: GOAWAY, calls in flight finish within "
                       "--grace, exit 0. The first line printed is the addresses served.")
    p.add_argument("target", nargs="+", help="pkg.module:obj (obj may be a class)")
    p.add_argument("--listen", action="append", help="address to serve (repeatable; default "
                   "tcp://127.0.0.1:7001; FASTRPC_LISTEN, comma-separated)")
    p.add_argument("--workers", type=int, default=int(_env("WORKERS", 1)),
                   help="processes sharing the port (SO_REUSEPORT; default %(default)s)")
    p.add_argument("--codec", choices=["fastrpc", "gob", "jsonrpc"], default=_env("CODEC", "fastrpc"),
                   help="protocol: fastrpc's, or Go net/rpc's gob or jsonrpc")
    p.add_argument("--http", action="store_true", help="Go's rpc.DialHTTP transport (HTTP CONNECT, then gob)")
    p.add_argument("--grace", type=float, default=float(_env("GRACE", 5.0)),
                   help="seconds calls in flight get to finish on SIGTERM (default %(default)s)")
    p.add_argument("--tls-cert", default=_env("TLS_CERT"), help="serve TLS with this certificate (PEM)")
    p.add_argument("--tls-key", default=_env("TLS_KEY"), help="the certificate's key (PEM)")
    p.add_argument("--tls-ca", default=_env("TLS_CA"), help="require client certificates signed by this CA")
    p.add_argument("--auth-secret-file", default=_env("AUTH_SECRET_FILE"),
                   help="require the shared-secret handshake with the secret in this file")
    p.add_argument("--etcd", default=_env("ETCD"), help="register in this etcd (http://host:2379)")
    p.add_argument("--service", default=_env("SERVICE"), help="the name to register under")
    p.add_argument("--advertise", default=_env("ADVERTISE"), help="the address clients dial (default: the first served)")
    p.add_argument("--reuse-port", action="store_true", help="bind with SO_REUSEPORT (several processes, one port)")
    p.add_argument("--metrics", default=_env("METRICS"),
                   help="serve /metrics (Prometheus) and /status here, http://host:port; with --workers, "
                   "the sum of every worker's")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker-metrics", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(run=serve)

    p = sub.add_parser("call", help="call a method and print its result as JSON",
                       description="Call Service.Method with JSON arguments and print the result as JSON "
                       "(bytes as text or {\"base64\": ...}, arrays as lists). Works against Go net/rpc "
                       "servers with --codec gob|jsonrpc (one argument: an object for a struct).")
    p.add_argument("address")
    p.add_argument("method", help="Service.Method")
    p.add_argument("args", nargs="*", help="positional arguments, each JSON: 10 '\"text\"' '{\"A\": 1}'")
    p.add_argument("--kw", action="append", metavar="NAME=JSON", help="a keyword argument (repeatable)")
    p.add_argument("--metadata", action="append", metavar="KEY=VALUE", help="call metadata (repeatable)")
    p.add_argument("--stream", action="store_true",
                   help="open a stream: print each item as a JSON line, then the result unless null")
    p.add_argument("--send-stdin", action="store_true",
                   help="stream each line of standard input (JSON) to the method (implies --stream)")
    _client_flags(p)
    p.set_defaults(run=cmd_call)

    p = sub.add_parser("list", help="the services and methods a server serves (reflection)")
    p.add_argument("address")
    p.add_argument("--json", action="store_true", help="print the full description as JSON")
    _client_flags(p)
    p.set_defaults(run=cmd_list)

    p = sub.add_parser("describe", help="a service or method: parameters, return type, docstring (JSON)")
    p.add_argument("address")
    p.add_argument("name", help="Service or Service.Method")
    _client_flags(p)
    p.set_defaults(run=cmd_describe)

    p = sub.add_parser("ping", help="round-trip times to a server (JSON)")
    p.add_argument("address")
    p.add_argument("--count", type=int, default=1, help="pings to send (default %(default)s)")
    p.add_argument("--interval", type=float, default=0.2, help="seconds between pings")
    _client_flags(p)
    p.set_defaults(run=cmd_ping)

    p = sub.add_parser("bench", help="load a server: calls/s and latency percentiles",
                       description="Closed loop (--concurrency calls always in flight) or open loop (--rate "
                       "calls per second on a fixed schedule, latency from each call's intended send time). "
                       "Several comma-separated addresses with --balancer STRATEGY go through a Balancer.")
    p.add_argument("address", help="address, or several comma-separated with --balancer")
    p.add_argument("method", help="Service.Method")
    p.add_argument("args", nargs="*", help="arguments, each JSON")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--concurrency", type=int, default=64, help="calls in flight (default %(default)s)")
    mode.add_argument("--rate", type=float, help="calls per second, open loop")
    p.add_argument("--duration", type=float, default=5.0, help="seconds (default %(default)s)")
    p.add_argument("--connections", type=int, default=1, help="client connections (default %(default)s)")
    p.add_argument("--balancer", metavar="STRATEGY", choices=sorted(fastrpc.STRATEGIES) + ["all"],
                   help="balance over the addresses with this strategy ('all': each in turn but geo, "
                        "which needs coordinates, as a table)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    _client_flags(p, timeout=30.0)
    p.set_defaults(run=cmd_bench)

    p = sub.add_parser("registry", help="the endpoints a balancer would see (ls, or watch live)")
    p.add_argument("action", choices=["ls", "watch"])
    p.add_argument("--etcd", default=_env("ETCD"), help="etcd URL")
    p.add_argument("--file", help="a discovery file (JSON or TOML)")
    p.add_argument("--service", help="one service (default: every service; watch needs one)")
    p.add_argument("--seconds", type=float, help="watch: stop after this long (default: until Ctrl-C)")
    p.set_defaults(run=cmd_registry)
    return top


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command; return its exit code."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.command == "serve" and args.listen is None and _env("LISTEN"):
        args.listen = [a for a in _env("LISTEN").split(",") if a]
    try:
        code: int = args.run(args)
        return code
    except UsageError as exc:
        print(f"fastrpc {args.command}: {exc}", file=sys.stderr)
        return 2
    except RemoteError as exc:
        print(f"fastrpc {args.command}: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    except (RPCError, OSError, ValueError, TypeError, RuntimeError) as exc:
        print(f"fastrpc {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:                 # the reader went away (| head): nothing to say
        return 0


def run() -> None:
    """The console script's entry point."""
    sys.exit(main())
