"""The training error: bad outcome data, named by file, row and field.

`DataError` is an `R2Error`, so the CLI reports it as one line on stderr with exit code 2.
Messages name the file, the 1-based row (the line of a `.jsonl`, the data row of a CSV or
Parquet file) and the field, and where there is one, the fix; they never quote prompt text.
"""

from __future__ import annotations

from .._errors import R2Error, with_location


class DataError(R2Error):
    """Outcome data or a policies file that cannot be trained or evaluated on."""

    def __init__(self, message: str, file: str | None = None, row: int | None = None,
                 field: str | None = None, fix: str | None = None) -> None:
        text = with_location(message, file=file, row=row, field=field)
        super().__init__(f"{text}; fix: {fix}" if fix else text)
        self.file = file
        self.row = row
        self.field = field
        self.fix = fix
