"""Errors of the tools that speak to ComfyUI servers."""

from __future__ import annotations

from fantasyportrait_core.errors import FantasyPortraitError


class RunError(FantasyPortraitError):
    """The server refused or failed the workflow. ``transient``: worth trying again (a server-side
    HTTP 5xx, out of memory), as opposed to a failure on the job's own inputs."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


class ServerUnreachable(RunError):
    """The server cannot be reached, or the connection to it was lost."""


class PromptVanished(ServerUnreachable):
    """The prompt is neither queued, running nor in the history: the server was restarted."""
