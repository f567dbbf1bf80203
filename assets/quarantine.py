"""Quarantine: every row an asset drops, with where it came from and why.

A quarantine row names the asset that dropped it, the source file and the 1-based line of the row
in that file (the header is line 1, so the first data row is line 2: what an editor shows), a
machine-readable `reason`, a human `detail` sentence, and the row's original columns as a JSON
object (assets have different columns; one JSON column keeps one schema for all of them).

The accounting rule every asset keeps: rows in = rows out + rows quarantined."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

# Columns every source table carries while it is processed: where each row came from.
SOURCE_COL, ROW_COL = "_source", "_row"
QUARANTINE_SCHEMA = {
    "asset": pl.String,
    "source": pl.String,
    "row": pl.Int64,
    "reason": pl.String,
    "detail": pl.String,
    "original": pl.String,
}


def empty() -> pl.DataFrame:
    return pl.DataFrame(schema=QUARANTINE_SCHEMA)


def with_provenance(lf: pl.LazyFrame, source: str) -> pl.LazyFrame:
    """Tag each row with its source file and its line number in that file."""
    return lf.with_row_index(ROW_COL, offset=2).with_columns(
        pl.col(ROW_COL).cast(pl.Int64), pl.lit(source).alias(SOURCE_COL)
    )


def rows(df: pl.DataFrame, asset: str, reason: str, detail: pl.Expr | str) -> pl.DataFrame:
    """Quarantine rows of `df` (which must carry _source/_row) with one reason."""
    if df.height == 0:
        return empty()
    # Helper columns of a step start with "_" (as do _source/_row): not part of the original row.
    originals = [c for c in df.columns if not c.startswith("_")]
    detail_expr = pl.lit(detail) if isinstance(detail, str) else detail
    return df.select(
        pl.lit(asset).alias("asset"),
        pl.col(SOURCE_COL).cast(pl.String).alias("source"),
        pl.col(ROW_COL).cast(pl.Int64).alias("row"),
        pl.lit(reason).alias("reason"),
        # pl.format gives null when a field it names is null (a short CSV row): still say why.
        detail_expr.cast(pl.String).fill_null(f"{reason}: a field it checks is empty").alias("detail"),
        pl.struct(originals).struct.json_encode().alias("original"),
    )


@dataclass
class Sieve:
    """Applies rules one after another to a table; each rule removes the rows it flags and
    quarantines them, so a row is quarantined once, for the first rule it breaks."""

    df: pl.DataFrame
    asset: str

    def __post_init__(self) -> None:
        self.rows_in = self.df.height
        self.parts: list[pl.DataFrame] = []

    def drop(self, bad: pl.Expr, reason: str, detail: pl.Expr | str) -> None:
        mask = self.df.select(bad.fill_null(True)).to_series()
        if not mask.any():  # the usual case: no copy of a 377k-row table per rule
            return
        flagged = self.df.with_columns(mask.alias("_bad"))
        self.parts.append(rows(flagged.filter(pl.col("_bad")).drop("_bad"), self.asset, reason, detail))
        self.df = flagged.filter(~pl.col("_bad")).drop("_bad")

    def drop_frame(self, q: pl.DataFrame) -> None:
        """Add rows quarantined by a step that could not be written as one expression."""
        self.parts.append(q)

    @property
    def quarantine(self) -> pl.DataFrame:
        parts = [p for p in self.parts if p.height]
        return pl.concat(parts) if parts else empty()

    def counts(self, rows_out: int) -> dict[str, int]:
        """The accounting, checked: raises if rows were lost or invented."""
        q = self.quarantine.height
        if self.rows_in != rows_out + q:
            raise AssertionError(f"{self.asset}: rows in {self.rows_in} != out {rows_out} + quarantined {q}")
        return {"rows_in": self.rows_in, "rows_out": rows_out, "rows_quarantined": q}


def reason_counts(q: pl.DataFrame) -> dict[str, int]:
    if q.height == 0:
        return {}
    c = q.group_by("reason").len().sort("reason")
    return dict(zip(c["reason"].to_list(), c["len"].to_list()))
