"""Build the Cython extensions under engine/ (setuptools + Cython 3).

Every ``engine/*.pyx`` is one extension; its declarations are in the
same-named ``.pxd`` and its C helpers in ``engine/includes/``.
"""
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

INCLUDES = ["engine/includes", numpy.get_include()]

EXTENSIONS = [
    Extension(
        f"engine.{pyx.stem}",
        [str(pyx)],
        include_dirs=INCLUDES,
        extra_compile_args=["-O3", "-fno-strict-aliasing"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    for pyx in sorted(Path("engine").glob("*.pyx"))
] + [  # the gateway's: libzmq is reached through pyzmq's own copy at run time (gateway/intake.pyx)
    Extension(f"gateway.{pyx.stem}", [str(pyx)], include_dirs=INCLUDES, extra_compile_args=["-O3"])
    for pyx in sorted(Path("gateway").glob("*.pyx"))
] + [  # the feeds' round and check loops (feeds/kernels.pyx), on the engine's record layout
    Extension(f"feeds.{pyx.stem}", [str(pyx)], include_dirs=INCLUDES, extra_compile_args=["-O3"],
              define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")])
    for pyx in sorted(Path("feeds").glob("*.pyx"))
]

setup(
    ext_modules=cythonize(
        EXTENSIONS,
        language_level=3,
        include_path=["engine/includes", "engine"],
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    ),
)
