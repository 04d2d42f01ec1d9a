"""One base for every error a user can fix. The CLI prints its message and exits 2; any other exception
is a bug and keeps its traceback. Each module's own error class derives from PipelineError."""
from __future__ import annotations


class PipelineError(Exception):
    """A problem with the user's files, settings or request, explained in the message."""


class UsageError(PipelineError, ValueError):
    """A request that cannot be carried out as asked (settings that do not fit together, a missing option)."""


class MissingArtifact(PipelineError, FileNotFoundError):
    """A stage's input that an earlier stage writes is not there yet (the message names the stage to run)."""


class DamagedArtifact(PipelineError, ValueError):
    """A file the pipeline wrote that no longer reads as what was written (truncated, edited, a disk error)."""


class InstallError(PipelineError, RuntimeError):
    """The bundled wheels cannot be installed on this image."""


class UnsafePath(PipelineError, ValueError):
    """Something met at the boundary that the pipeline will not follow or write: a symbolic link inside a run,
    bundle or output folder, an archive member or downloaded file named outside its folder, a device file."""


class Busy(PipelineError, RuntimeError):
    """Another process is writing the same artifact (it holds its lock); the message names it."""
