"""The API reference and the tutorial cannot drift from the package: every
public name, setting, strategy and logger is documented, and the tutorial's
programs run (against the installed package, a real etcd for discovery)."""
import inspect
import logging
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fastrpc
import fastrpc.errors
from fastrpc.balancer.core import BalancerCore
from fastrpc.net.settings import ClientSettings
from support import etcd_process

DOCS = Path(__file__).resolve().parent.parent / "docs"
API = (DOCS / "api.rst").read_text()


def documented_names():
    """Names the reference documents: auto* directives and data entries."""
    names = set(re.findall(r"^\.\. auto(?:class|function|data):: fastrpc\.(\w+)", API, re.M))
    names |= set(re.findall(r"^\.\. data:: (\w+)", API, re.M))
    if ".. automodule:: fastrpc.errors" in API:
        names |= set(fastrpc.errors.__all__)          # documented with :members:
    return names


def test_every_public_name_is_in_the_reference():
    missing = set(fastrpc.__all__) - documented_names()
    assert not missing, f"add to docs/api.rst: {sorted(missing)}"


def test_every_error_is_in_the_reference_with_a_docstring():
    assert ".. automodule:: fastrpc.errors" in API
    for name in fastrpc.errors.__all__:
        assert getattr(fastrpc.errors, name).__doc__, name


def test_every_public_callable_has_a_docstring():
    for name in fastrpc.__all__:
        obj = getattr(fastrpc, name)
        if callable(obj):
            assert obj.__doc__ and obj.__doc__.strip(), name


def settings_of(function):
    return [name for name, p in inspect.signature(function).parameters.items()
            if name != "self" and p.kind is p.KEYWORD_ONLY]


@pytest.mark.parametrize("cls, function", [
    (fastrpc.Server, fastrpc.Server.__init__),
    (ClientSettings, ClientSettings.__init__),
    (BalancerCore, BalancerCore._configure),
])
def test_every_setting_is_described_where_the_reference_shows_it(cls, function):
    text = cls.__doc__
    missing = [name for name in settings_of(function) if name not in text]
    assert not missing, f"{cls.__name__}'s docstring does not describe {missing}"


def test_every_strategy_is_in_the_reference():
    for name in fastrpc.STRATEGIES:
        assert f"``{name}``" in API, name


def test_every_logger_is_in_the_reference():
    for module in pkgutil.walk_packages(fastrpc.__path__, "fastrpc."):
        if module.name != "fastrpc.demo":
            __import__(module.name)
    loggers = {name for name, logger in logging.root.manager.loggerDict.items()
               if name.startswith("fastrpc") and isinstance(logger, logging.Logger)}
    assert loggers, "no fastrpc logger found"
    for name in loggers:
        assert f"``{name}``" in API, f"logger {name} is not in docs/api.rst"


def run_tutorial(name, env=None):
    script = DOCS / "tutorial" / name
    # From a temporary directory: the installed package, not the source tree.
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                         cwd=os.environ.get("TMPDIR", "/tmp"), env={**os.environ, **(env or {})})
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.mark.parametrize("name", ["service.py", "balanced.py"])
def test_the_tutorial_runs(name):
    assert run_tutorial(name).strip().endswith(": ok")


def test_the_tutorial_on_etcd_runs(tmp_path):
    with etcd_process(tmp_path / "etcd") as etcd:
        assert run_tutorial("discovery.py", {"FASTRPC_ETCD": etcd.url}).strip() == "discovery: ok"


def test_the_tutorial_is_what_the_docs_show():
    page = (DOCS / "tutorial.rst").read_text()
    for script in sorted((DOCS / "tutorial").glob("*.py")):
        assert f".. literalinclude:: tutorial/{script.name}" in page, script.name


def run_readme_example(tmp_path, marker=None):
    """Run the README's first ```python block (or the first holding `marker`)
    as a script; assert it succeeds; return its output lines."""
    readme = (DOCS.parent / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    example = blocks[0] if marker is None else next(block for block in blocks if marker in block)
    script = tmp_path / "readme_example.py"
    script.write_text(example)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_the_readme_first_example_runs(tmp_path):
    run_readme_example(tmp_path)


def test_the_readme_typed_example_runs(tmp_path):
    run_readme_example(tmp_path, "KVProtocol")


def test_the_readme_observability_example_runs(tmp_path):
    lines = run_readme_example(tmp_path, "def guard")
    assert lines[1] == "1"                                              # the client counted its call
    assert "PermissionDenied: Tenants.Whoami: no tenant" in lines       # refused by the server's guard
    assert "1 1" in lines                                               # the balancer counted the refusal
    assert "{'PermissionDenied': 1}" in lines                           # and so did the server
    assert all("Tenants.Whoami tcp://127.0.0.1:" in line for line in lines if line.startswith("Tenants."))


def test_the_readme_streams_example_runs(tmp_path):
    assert run_readme_example(tmp_path, "Numbers.Range") == ["[0, 1, 2, 3, 4]", "4950", "10"]


@pytest.mark.parametrize("qualname, parameters", [
    ("Client.call", ["self", "method", "args", "timeout", "kwargs"]),
    ("Client.go", ["self", "method", "args", "timeout", "kwargs"]),
    ("AsyncClient.call", ["self", "method", "args", "timeout", "kwargs"]),
    ("Balancer.call", ["self", "method", "args", "key", "timeout", "idempotent", "kwargs"]),
    ("Balancer.go", ["self", "method", "args", "key", "timeout", "idempotent", "kwargs"]),
    ("AsyncBalancer.call", ["self", "method", "args", "key", "timeout", "idempotent", "kwargs"]),
])
def test_the_compiled_call_methods_look_like_methods(qualname, parameters):
    # They are compiled functions in the class body: the reference, help()
    # and introspection must see what a Python method would show.
    cls, name = qualname.split(".")
    method = getattr(getattr(fastrpc, cls), name)
    assert (method.__name__, method.__qualname__) == (name, qualname)
    signature = inspect.signature(method)
    assert list(signature.parameters) == parameters
    assert signature.parameters["args"].kind is inspect.Parameter.VAR_POSITIONAL
    assert all(signature.parameters[p].default is None for p in parameters[3:-1])
    assert method.__doc__.strip() and "(self" not in method.__doc__.splitlines()[0]   # no embedded signature
    assert inspect.iscoroutinefunction(method) is cls.startswith("Async")
    instance = object.__new__(getattr(fastrpc, cls))
    assert list(inspect.signature(getattr(instance, name)).parameters) == parameters[1:]   # binds as a method
