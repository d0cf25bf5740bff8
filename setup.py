"""Build the Cython extensions under engine/ (setuptools + Cython 3)."""
import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

EXTENSIONS = [
    Extension(
        "engine.matcher",
        ["engine/matcher.pyx"],
        include_dirs=["engine/includes", numpy.get_include()],
        extra_compile_args=["-O3", "-fno-strict-aliasing"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    ),
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
