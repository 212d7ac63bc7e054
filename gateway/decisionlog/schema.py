"""The decision log's tables and their migrations, for SQLite and PostgreSQL.

The project owns the schema: `migrate` creates the tables on first use and applies every
migration newer than the version recorded in `schema_version`, in one transaction each.
A database written by a newer gateway (a higher version) is refused rather than guessed at.

Tables:
- `decisions`: one row per routed request (decision, outcome, feedback); `ts` indexed.
- `arm_totals`: per write batch and arm, the number of requests and the sums of every arm's
  predicted quality and cost on them: what "always send to arm X" would have cost, which the
  savings report compares with the realised spend (one small row per arm and batch, instead
  of every arm's prediction in every record).
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = 1

#: `decisions` columns in insert order: (name, portable type).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("request_id", "TEXT PRIMARY KEY"),
    ("ts", "REAL NOT NULL"),
    ("key_id", "TEXT"),
    ("endpoint", "TEXT"),
    ("model", "TEXT"),
    ("policy", "TEXT"),
    ("lambda", "REAL"),
    ("tradeoff", "REAL"),
    ("input_tokens", "INTEGER"),
    ("predicted_quality", "REAL"),
    ("predicted_output_tokens", "REAL"),
    ("predicted_cost_usd", "REAL"),
    ("candidates", "TEXT"),
    ("explored", "INTEGER"),
    ("propensity", "REAL"),
    ("greedy_model", "TEXT"),
    ("greedy_policy", "TEXT"),
    ("embedding", "BLOB"),
    ("embedding_kind", "TEXT"),
    ("status", "INTEGER"),
    ("error", "TEXT"),
    ("finish_reason", "TEXT"),
    ("prompt_tokens", "INTEGER"),
    ("completion_tokens", "INTEGER"),
    ("cost_usd", "REAL"),
    ("latency_ms", "REAL"),
    ("fallback", "TEXT"),
    ("truncated", "INTEGER"),
    ("upstream_error", "INTEGER"),
    ("client_closed", "INTEGER"),
    ("prompt", "TEXT"),
    ("answer", "TEXT"),
    ("feedback_score", "REAL"),
    ("feedback_comment", "TEXT"),
    ("feedback_ts", "REAL"),
)
NAMES = tuple(name for name, _ in COLUMNS)
#: Columns written when a request finishes (feedback comes later, by update).
INSERTED = NAMES[: NAMES.index("feedback_score")]

ARM_COLUMNS = ("ts", "model", "policy", "n", "sum_quality", "sum_cost")


@dataclass(frozen=True)
class Dialect:
    name: str
    real: str
    blob: str
    placeholder: str

    def sql(self, text: str) -> str:
        """`text` with portable types and `?` placeholders in this dialect."""
        out = text.replace("REAL", self.real).replace("BLOB", self.blob)
        return out.replace("?", self.placeholder)


SQLITE = Dialect("sqlite", "REAL", "BLOB", "?")
POSTGRES = Dialect("postgresql", "DOUBLE PRECISION", "BYTEA", "%s")


def _v1() -> list[str]:
    cols = ",\n  ".join(f"{name} {kind}" for name, kind in COLUMNS)
    return [
        f"CREATE TABLE IF NOT EXISTS decisions (\n  {cols}\n)",
        "CREATE INDEX IF NOT EXISTS decisions_ts ON decisions (ts)",
        "CREATE TABLE IF NOT EXISTS arm_totals (ts REAL NOT NULL, model TEXT NOT NULL, "
        "policy TEXT NOT NULL, n INTEGER NOT NULL, sum_quality REAL NOT NULL, "
        "sum_cost REAL NOT NULL)",
        "CREATE INDEX IF NOT EXISTS arm_totals_ts ON arm_totals (ts)",
    ]


#: version -> statements that bring a database from version-1 to it.
MIGRATIONS: dict[int, list[str]] = {1: _v1()}


def insert_sql(dialect: Dialect) -> str:
    names = ", ".join(INSERTED)
    marks = ", ".join("?" for _ in INSERTED)
    conflict = " ON CONFLICT (request_id) DO NOTHING"
    return dialect.sql(f"INSERT INTO decisions ({names}) VALUES ({marks}){conflict}")


def arm_insert_sql(dialect: Dialect) -> str:
    marks = ", ".join("?" for _ in ARM_COLUMNS)
    return dialect.sql(f"INSERT INTO arm_totals ({', '.join(ARM_COLUMNS)}) VALUES ({marks})")


FEEDBACK_SQL = ("UPDATE decisions SET feedback_score = ?, feedback_comment = ?, feedback_ts = ? "
                "WHERE request_id = ?")
