"""``python -m fastrpc``: the ``fastrpc`` command."""
from fastrpc.cli.main import run

if __name__ == "__main__":
    run()
