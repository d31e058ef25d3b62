"""The independent oracle: FrameFusion written from ``shared/FRAMEFUSION.md`` only.

Nothing here imports ``ffexport.fusion``; the tests and the build's parity gate compare the dynamic
reference (and through it every exported graph) with it.
"""

from ffexport.oracle.naive import NaiveBudgetError, NaiveFrameFusion, NaiveResult, naive_budget

__all__ = ["NaiveBudgetError", "NaiveFrameFusion", "NaiveResult", "naive_budget"]
