"""streamsplat-ns: StreamSplat (arXiv 2506.08862) as a nerfstudio plugin.

Importing the package is cheap on purpose: nerfstudio discovers entry points at start-up, and
gsplat must never be imported (it JIT-compiles CUDA) unless a GPU path asks for it.
"""

__version__ = "0.1.0"
