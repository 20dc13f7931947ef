"""Declares fastrpc's Cython extensions; all metadata lives in pyproject.toml."""
import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DIRECTIVES = {"language_level": "3", "embedsignature": True}
COMPILE_ARGS = ["-O3"]


def extension(name: str, suffix: str = "pyx") -> Extension:
    return Extension(
        f"fastrpc.{name}",
        [f"fastrpc/{name}.{suffix}"],
        include_dirs=["csrc", numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=COMPILE_ARGS,
    )


setup(
    ext_modules=cythonize(
        [extension(name) for name in ("_codec", "_wire", "_calls", "_serve")]
        # Pure-Python mode: the .py is also the uncompiled reference implementation.
        + [extension("_select", "py"), extension("_gob", "py")],
        compiler_directives=DIRECTIVES,
    ),
)
