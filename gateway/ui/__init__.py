"""The dashboard: `GET /ui` (a static page shipped as package data), its JSON API under
`/ui/api/`, and the in-process live statistics that feed it."""

from .routes import mount_ui
from .stats import Finished, LiveStats

__all__ = ["Finished", "LiveStats", "mount_ui"]
