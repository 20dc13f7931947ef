"""Static types: mypy --strict passes on the package and on the README's
examples, and catches what typed settings and typed proxies promise to
catch (a misspelled setting, a wrong use of a proxied method's result)."""
import re
import subprocess
import sys
import textwrap
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent


def mypy(*targets, cwd):
    """Run mypy --strict; return (exit code, its report)."""
    out = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                          "--python-version", f"{sys.version_info[0]}.{sys.version_info[1]}", *targets],
                         capture_output=True, text=True, cwd=cwd, timeout=600)
    return out.returncode, out.stdout + out.stderr


def test_the_package_passes_mypy_strict():
    code, report = mypy("fastrpc", cwd=ROOT)
    assert code == 0, report


def test_the_readme_examples_pass_mypy_strict(tmp_path):
    # Every python block of the README, in order (later ones use names the
    # first defines), checked against the installed package.
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert len(blocks) >= 4
    (tmp_path / "readme_examples.py").write_text("\n".join(blocks))
    code, report = mypy("readme_examples.py", cwd=tmp_path)
    assert code == 0, report


WRONG = '''
from typing import Protocol

import fastrpc


class KVProtocol(Protocol):
    def Get(self, key: str) -> int: ...


client = fastrpc.Client("tcp://127.0.0.1:1", timout=1.0)
balancer = fastrpc.Balancer(["tcp://127.0.0.1:1"], strategy=3)
kv = client.proxy(KVProtocol)
text: str = kv.Get("a")
kv.Put("a", 1)
'''


def test_typed_settings_and_proxies_catch_mistakes(tmp_path):
    (tmp_path / "wrong.py").write_text(textwrap.dedent(WRONG))
    code, report = mypy("wrong.py", cwd=tmp_path)
    assert code == 1
    assert 'Unexpected keyword argument "timout" for "Client"' in report
    assert 'Argument "strategy" to "Balancer" has incompatible type "int"' in report
    assert 'Incompatible types in assignment (expression has type "int", variable has type "str")' in report
    assert '"KVProtocol" has no attribute "Put"' in report
