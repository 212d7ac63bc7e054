"""The decision log: one record per routed request, feedback, exploration and reports.

Modules: `settings` (the `log:` and `explore:` config), `explore` (the decision hook, with
propensities), `record` (what a finished request becomes), `schema` (tables and migrations),
`store` (SQLite / PostgreSQL), `writer` (the bounded background writer), `core`
(`DecisionLog`, what the app holds), `feedback` (`POST /v1/feedback`), `report`
(`r2 report`, `summary()`), `learn` (`r2 train/calibrate --from-log`).
"""

from .core import DecisionLog, decision_hook
from .explore import Explorer, LoggedDecision
from .feedback import handle_feedback, validate_feedback
from .record import Trace
from .settings import ExploreSettings, LogSettings
from .store import SQLStore, StoreError, open_store

__all__ = [
    "DecisionLog",
    "ExploreSettings",
    "Explorer",
    "LogSettings",
    "LoggedDecision",
    "SQLStore",
    "StoreError",
    "Trace",
    "decision_hook",
    "handle_feedback",
    "open_store",
    "validate_feedback",
]
