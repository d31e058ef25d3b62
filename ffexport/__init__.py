"""ffexport: video LLMs with FrameFusion token reduction, as static-bucket graphs.

Stages: ``models`` (load) -> ``fusion`` (dynamic reference / static schedule) -> ``reference``.
This package root imports nothing heavy, so ``ffexport.runtime`` stays torch-free.
"""

__version__ = "0.1.0"
