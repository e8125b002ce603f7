"""The kopf controller: handlers, the reconciler and the one Kubernetes API module."""

from agentmem.controller.reconcile import Reconciler
from agentmem.controller.settings import Settings

__all__ = ["Reconciler", "Settings"]
