"""Configuration of the decision log (`log:`) and of exploration (`explore:`) in gateway.yaml.

    log:
      path: r2-decisions.sqlite3          # SQLite file (WAL); or
      database_url: postgresql://u@h/db   # PostgreSQL (psycopg 3)
      content: false                      # prompt and answer text only when true
      embedding: float16                  # float16 | sha256 | none
      retention_days: 30                  # older records are deleted (null: kept forever)
    explore:
      rate: 0.02                          # share of requests sent to another feasible arm
      temperature: 0.2                    # softmax temperature, in units of the utility range
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class LogSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: SQLite file (relative paths resolve against the working directory).
    path: str = "r2-decisions.sqlite3"
    #: `postgresql://...` to log to PostgreSQL instead of the SQLite file.
    database_url: str | None = None
    #: Prompt (the conversation, as JSON) and answer text are stored only when true.
    content: bool = False
    #: How the routing embedding is stored: float16 bytes, a sha256 of them, or not at all.
    embedding: Literal["float16", "sha256", "none"] = "float16"
    #: Records older than this are deleted by the writer (None: never).
    retention_days: float | None = Field(default=30.0, gt=0)
    #: Records waiting for the writer; beyond it new records are dropped and counted.
    queue_size: int = Field(default=4096, gt=0)
    #: Records written per transaction at most.
    batch_size: int = Field(default=512, gt=0)
    #: How long the writer waits to fill a batch.
    flush_interval_s: float = Field(default=0.5, gt=0)
    #: Candidates kept per record (best utility first).
    candidates: int = Field(default=5, ge=1, le=64)

    @model_validator(mode="after")
    def _url(self) -> LogSettings:
        url = self.database_url
        if url is not None and not url.startswith(("postgresql://", "postgres://")):
            raise ValueError("database_url must start with postgresql:// (or leave it out to "
                             "use the SQLite file `path`)")
        return self


class ExploreSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Share of routed requests sent to another feasible candidate.
    rate: float = Field(ge=0, le=1)
    #: Softmax temperature in units of the request's utility range (max - min over feasible
    #: candidates): an arm that far below the best has weight e^-1/temperature relative to it.
    temperature: float = Field(default=0.2, gt=0)
    #: Seed of the draw (tests); None seeds from the OS.
    seed: int | None = None
