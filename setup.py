"""Declares fastrpc's Cython extensions; all metadata lives in pyproject.toml."""
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DIRECTIVES = {"language_level": "3", "embedsignature": True}
# Python's own flags add -g: -g0 drops the debug info (the extensions are
# several times smaller). FASTRPC_DEBUG_BUILD=1 keeps it, for profilers and
# debuggers.
DEBUG = os.environ.get("FASTRPC_DEBUG_BUILD") == "1"
COMPILE_ARGS = ["-O3"] + ([] if DEBUG else ["-g0"])

# (module, source): .pyx modules, and pure-Python-mode .py modules whose
# source is also the uncompiled reference implementation.
MODULES = [
    ("fastrpc._core.buffer", "fastrpc/_core/buffer.pyx"),
    ("fastrpc._core.codec", "fastrpc/_core/codec.pyx"),
    ("fastrpc._core.frame", "fastrpc/_core/frame.pyx"),
    ("fastrpc._core.calltable", "fastrpc/_core/calltable.pyx"),
    ("fastrpc._core.balance", "fastrpc/_core/balance.pyx"),
    ("fastrpc._core.transport", "fastrpc/_core/transport.pyx"),
    ("fastrpc._core.leading", "fastrpc/_core/leading.pyx"),
    ("fastrpc._core.servercore", "fastrpc/_core/servercore.pyx"),
    ("fastrpc._core.select", "fastrpc/_core/select.py"),
    ("fastrpc.go._gob", "fastrpc/go/_gob.py"),
]


def extension(name: str, source: str) -> Extension:
    return Extension(
        name,
        [source],
        include_dirs=["csrc", numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=COMPILE_ARGS,
    )


JOBS = os.cpu_count() or 1

setup(
    ext_modules=cythonize([extension(name, source) for name, source in MODULES],
                          compiler_directives=DIRECTIVES, nthreads=JOBS),
    # Compile the extensions side by side (a wheel per Python is built in CI).
    options={"build_ext": {"parallel": JOBS}},
)
