"""Exceptions, one class per pipeline stage.

Every error a user can cause is raised as a subclass of :class:`FFExportError`; the CLI prints
``error: <message>`` on one line and exits with the class's ``exit_code``. Raise with ``from e``
and say which step failed and what the user can do next.
"""

from __future__ import annotations


class FFExportError(Exception):
    """Base class: a failure the user can act on (never a bug in ffexport)."""

    exit_code = 1
    stage = "ffexport"

    def __str__(self) -> str:  # one line, stage first
        return f"{self.stage}: {super().__str__()}"


class InputError(FFExportError):
    """Bad user input: a malformed npz, a video span that does not match its grid, bad options."""

    exit_code = 2
    stage = "input"


class ModelError(FFExportError):
    """The model cannot be resolved or loaded: unknown preset, missing weights, unsupported family."""

    exit_code = 3
    stage = "model"


class ScheduleError(FFExportError):
    """A schedule file is malformed or asks for something impossible for its bucket."""

    exit_code = 4
    stage = "schedule"


class FusionError(FFExportError):
    """FrameFusion cannot run with these settings (e.g. a cost budget the model cannot meet)."""

    exit_code = 5
    stage = "fusion"


class CaptureError(FFExportError):
    """Capturing a graph (torch.onnx) failed."""

    exit_code = 6
    stage = "capture"


class BuildError(FFExportError):
    """An engine cannot be built here (TensorRT missing, no GPU, the builder refused the graph)."""

    exit_code = 9
    stage = "build"


class RunError(FFExportError):
    """A built graph could not be loaded or run (the build is damaged or the runtime lacks something)."""

    exit_code = 8
    stage = "run"


class ValidationError(FFExportError):
    """An artefact does not match the PyTorch reference within its tolerance."""

    exit_code = 7
    stage = "validation"
