"""What the memory node and the router share: following the directory file, the
serve loop with signals and logging, and JSON error answers."""

from agentmem.runtime.directory import DirectoryFollower
from agentmem.runtime.errors import json_error
from agentmem.runtime.serve import run_service, serve_until_stopped

__all__ = ["DirectoryFollower", "json_error", "run_service", "serve_until_stopped"]
