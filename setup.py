"""The one thing pyproject.toml cannot declare stably: the optional C extension of the weight analysis.

float16/bfloat16 Gram kernels (AVX-512 or AVX2, ``workbench/files/_halfgram.c``); ``optional``: without a C
compiler the install goes on and the analysis uses numpy.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "workbench.files._halfgram",
            sources=["workbench/files/_halfgram.c"],
            depends=["workbench/files/_halfgram_kernels.h"],
            extra_compile_args=["-O3"],
            optional=True,
        )
    ]
)
