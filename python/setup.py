"""The package's one compiled piece, kjit._native (kjit/_native.c: the calls into libkjit.so's C
ABI). It needs only Python's headers, libffi's and DLPack's (Debian: python3-dev, libffi-dev,
libdlpack-dev); one binary serves every CPython >= 3.11 (the limited API)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "kjit._native",
            ["kjit/_native.c"],
            libraries=["ffi"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror"],
            py_limited_api=True,
        )
    ],
    options={"bdist_wheel": {"py_limited_api": "cp311"}},
)
