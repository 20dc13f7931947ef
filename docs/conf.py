"""Sphinx configuration of fastrpc's API reference and tutorial.

Build from this directory against the installed package (its compiled
modules; the source tree cannot be imported uncompiled):

    cd docs && python -m sphinx -W --keep-going -n -b html . _build/html
"""
import fastrpc

project = "fastrpc"
author = "The fastrpc authors"
copyright = "2026, The fastrpc authors"
release = fastrpc.__version__
version = release

extensions = ["sphinx.ext.autodoc", "sphinx.ext.intersphinx"]
# The Markdown pages (PROTOCOL.md, GO.md, ...) are read on the repository;
# this reference is the reStructuredText pages only.
source_suffix = {".rst": "restructuredtext"}
exclude_patterns = ["_build", "tutorial/*.py", "*.md"]
root_doc = "index"

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autoclass_content = "both"               # the class docstring and __init__'s
autodoc_typehints = "signature"
autodoc_preserve_defaults = True         # defaults as written: wire.DEFAULT_MAX_FRAME_SIZE, not a number
python_use_unqualified_type_names = True

# Offline builds: intersphinx has no inventories to fetch, so Python's own
# names are not links; nitpicky mode still checks every fastrpc reference.
intersphinx_mapping = {}
nitpicky = True
nitpick_ignore_regex = [
    # Standard-library and numpy types named in signatures.
    (r"py:class", r"(ssl\.|asyncio\.|concurrent\.|os\.|socket\.|typing\.|collections\.|numpy\.|np\.).*"),
    (r"py:class", r"(Any|Optional|Union|Callable|Iterable|Iterator|Dict|List|Tuple|Set|Sequence|Mapping|"
                  r"Awaitable|Type|Deque|Key|T|bytes|str|int|float|bool|object|tuple|list|dict|"
                  r"BaseException|Exception|TimeoutError|ConnectionError|OSError|ValueError|"
                  r"RuntimeError|NotImplementedError|KeyError|memoryview|bytearray|None|"
                  r"PathLike|type|frozenset|set|complex)(\[.*\])?"),
    (r"py:.*", r"fastrpc\._core\..*|fastrpc\..*\._.*|_asyncio\..*|logging"),
    # Internal seams a public method returns (docs/ARCHITECTURE.md describes them).
    (r"py:class", r"fastrpc\.client\.(connection\.Connection|aio\.AsyncConnection)|fastrpc\.balancer\.map\.MapJob"),
    (r"py:class", r"(Member|Attempt|Connection|Pool|Planner|Watch|Caller|Slot|Dispatcher|Handler|"
                  r"ClientSettings|BalancerCore|Strategy|Endpoint|Discovery|Registration|CallFuture|"
                  r"GoType|AsyncConnection|ServedConnection|CallContext|RetryBudget|ClientOptions|"
                  r"BalancerOptions|Proxy|Proxying)"),
    (r"py:class", r"fastrpc\.(extensions|client\.proxy)\.T|_ssl\.SSLContext"),
]

html_theme = "alabaster"
html_static_path = []
