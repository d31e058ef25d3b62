"""Defaults shared by the runtime API and ``ffexport run`` (a leaf module: importing it costs nothing)."""

DEFAULT_PROMPT = "Describe what happens in this video."
DEFAULT_MAX_NEW_TOKENS = 64

#: ``ffexport run --fit`` values, the default first (ffexport.runtime.fit)
FITS = ("crop", "pad", "resize", "strict")
