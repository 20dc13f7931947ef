"""Shared by the Go interop tests: the Go program, and Python twins of its types and services."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from fastrpc import GoArray, GoUint

GO_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "go")


def build_go_program(out_dir: str) -> str:
    """`go build` tests/go into out_dir; fail (never skip) without a Go toolchain."""
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("the Go toolchain is required for the interop tests: "
                           "run scripts/install-deps (apt-get install golang-go)")
    binary = os.path.join(out_dir, "gointerop")
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOPROXY": "off",
           "GOCACHE": os.environ.get("GOCACHE", os.path.join(tempfile.gettempdir(), "fastrpc-gocache"))}
    subprocess.run([go, "build", "-o", binary, "."], cwd=GO_SOURCE, env=env, check=True, timeout=600)
    return binary


class GoServer:
    """The Go program serving gob, gob over HTTP and jsonrpc on three ports."""

    def __init__(self, binary: str) -> None:
        self.proc = subprocess.Popen([binary, "serve"], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line:
            self.proc.kill()
            raise RuntimeError("Go server did not start")
        self.addresses: Dict[str, str] = json.loads(line)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def run_go_client(binary: str, mode: str, address: str) -> Dict[str, Any]:
    """Run every Go client scenario against address; {scenario: {"ok", "detail"}}."""
    out = subprocess.run([binary, "client", mode, address], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


# Python twins of the Go program's types -------------------------------------

@dataclass
class Args:
    A: int = 0
    B: int = 0


@dataclass
class Bag:
    Tags: List[str] = field(default_factory=list)
    Attrs: Dict[str, int] = field(default_factory=dict)
    Blob: bytes = b""


@dataclass
class Point:
    X: float = 0.0
    Y: float = 0.0


@dataclass
class Inner:
    Name: str = ""
    Tags: List[str] = field(default_factory=list)
    Scores: Optional[Dict[str, int]] = None


@dataclass
class Record:
    ID: int = 0
    Count: GoUint = 0
    Ratio: float = 0.0
    Name: str = ""
    Data: bytes = b""
    Flag: bool = False
    Points: List[Point] = field(default_factory=list)
    Inner: Inner = field(default_factory=Inner)
    Next: Optional["Record"] = None
    Meta: Optional[Dict[str, str]] = None
    Grid: GoArray[int, 3] = field(default_factory=lambda: [0, 0, 0])
    Ints: List[int] = field(default_factory=list)


@dataclass
class Tree:
    Value: int = 0
    Children: List["Tree"] = field(default_factory=list)


@dataclass
class Opaque:
    Name: str = ""
    Any: Any = None


def sample_record() -> Record:
    """The Go program's sampleRecord()."""
    return Record(
        ID=-9007199254740993, Count=2**64 - 1, Ratio=-2.5e-300, Name="héllo, 世界",
        Data=bytes([0, 1, 2, 255]), Flag=True,
        Points=[Point(1.5, -2), Point(0, 0), Point(math.inf, 1.7976931348623157e308)],
        Inner=Inner(Name="in", Tags=["a", "", "c"], Scores={"x": -1, "y": 1 << 40}),
        Next=Record(ID=1, Name="next", Grid=[0, 0, 7]),
        Meta={"k": "v", "": "empty"},
        Grid=[-1, 0, 2**63 - 1],
        Ints=[-2**63, -1, 0, 1, 2**63 - 1])


class Arith:
    """The Go program's Arith, in Python: Sum spreads Go's Args over two parameters."""

    def Sum(self, a: int, b: int) -> int:
        return a + b

    def Sub(self, a: int, b: int) -> int:
        return a - b                # order matters: Go's fields must meet a and b by name

    def Div(self, args: Args) -> int:
        if args.B == 0:
            raise ZeroDivisionError("divide by zero")
        return args.A // args.B


class Echo:
    """The Go program's Echo, in Python."""

    def Record(self, r: Record) -> Record:
        assert isinstance(r, Record)
        return r

    def Int(self, v: int) -> int:
        return v

    def Uint(self, v: GoUint) -> GoUint:
        return v

    def String(self, v: str) -> str:
        return v

    def Bytes(self, v: bytes) -> bytes:
        return v

    def Floats(self, v: List[float]) -> List[float]:
        return v

    def Map(self, v: Dict[str, int]) -> Dict[str, int]:
        return v

    def Lengths(self, b: Bag) -> str:
        return f"{len(b.Tags)},{len(b.Attrs)},{len(b.Blob)}"     # Go's nil collections are empty
