"""Named data-quality rules and the valid/quarantine split (in the style of databrickslabs/dqx).

A rule is a Column that is NULL when the row is fine and a message when it is not, plus an action:

- ``warn``: counted per batch, the row goes on;
- ``quarantine``: the row goes to ``bronze_quarantine`` with every failed rule's name and message;
- ``fail``: the batch stops with :class:`app.errors.DataQualityError`.

The ``unparseable`` rule covers unusable files and records; every other rule applies only to rows
that parsed, so a bad file is quarantined with one clear reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pyspark.sql import Column
from pyspark.sql import functions as F

from app.errors import DataQualityError
from app.quality.parsing import (
    INT_FIELDS,
    MAX_SINK_TIME,
    MIN_SINK_TIME,
    NUMERIC_FIELDS,
    TIMESTAMP_FIELDS,
    parse_double,
    parse_timestamp,
)
from app.tables import FIELDS_BY_COLUMN, MAX_KEY_CHARS, MAX_NAME_CHARS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

Action = Literal["warn", "quarantine", "fail"]
ACTIONS = ("warn", "quarantine", "fail")
CHECK_PREFIX = "dq_"
# No crypto market price exists before the Bitcoin genesis block (2009-01-03).
EARLIEST_MARKET_TIME = "2009-01-03T00:00:00Z"
# Raw field -> typed column checked by the type rule.
TYPED_FIELDS = {**NUMERIC_FIELDS, **INT_FIELDS, **TIMESTAMP_FIELDS}


@dataclass(frozen=True)
class Rule:
    """A named expectation.

    Attributes:
        name: snake_case ``<col>_<problem>``; the key of its counts in pipeline_metadata.
        check: NULL when the row passes, else a message saying what was expected and found.
        action: ``warn``, ``quarantine`` or ``fail``.
        record_level: apply only to rows that parsed (``parse_error IS NULL``).
    """

    name: str
    check: Column
    action: Action = "quarantine"
    record_level: bool = True

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"rule {self.name!r}: action must be one of {ACTIONS}, found {self.action!r}")


def _found(col_name: str) -> Column:
    return F.coalesce(F.col(col_name).cast("string"), F.lit("NULL"))


def unparseable() -> Column:
    """The file or record could not be read (not JSON, truncated, HTML, no data array, not an object)."""
    return F.col("parse_error")


def is_not_null(col_name: str) -> Column:
    """``col_name`` must be present (and, for text, not blank)."""
    col = F.col(col_name)
    missing = col.isNull() | (F.trim(col.cast("string")) == "")
    return F.when(missing, F.lit(f"{col_name} is required, found NULL or blank"))


def is_positive_finite(col_name: str) -> Column:
    """``col_name`` must be a finite number > 0."""
    col = F.col(col_name)
    bad = col.isNull() | F.isnan(col) | (col <= 0) | (F.abs(col) == float("inf"))
    return F.when(bad, F.concat(F.lit(f"{col_name} must be finite and > 0, found "), _found(col_name)))


def is_not_negative(col_name: str) -> Column:
    """``col_name`` must be >= 0 when present."""
    col = F.col(col_name)
    bad = F.isnan(col) | (col < 0)
    return F.when(
        F.coalesce(bad, F.lit(False)), F.concat(F.lit(f"{col_name} must be >= 0, found "), _found(col_name))
    )


def is_not_in_future(
    col_name: str, *, ref_col: str = "extracted_at", max_ahead_seconds: int = 86400
) -> Column:
    """``col_name`` must not be more than ``max_ahead_seconds`` after the batch reference ``ref_col``.

    The reference is the page's ``fetched_at`` (``extracted_at``), so the outcome is deterministic.
    """
    col, ref = F.col(col_name), F.col(ref_col)
    bad = col > ref + F.make_interval(secs=F.lit(max_ahead_seconds))
    return F.when(
        F.coalesce(bad, F.lit(False)),
        F.concat(
            F.lit(f"{col_name} must be at most {max_ahead_seconds}s after {ref_col} "),
            _found(ref_col),
            F.lit(", found "),
            _found(col_name),
        ),
    )


def is_plain_text(col_name: str, *, label: str | None = None) -> Column:
    """``col_name`` must be plain text, not a JSON object or array sent where a scalar belongs.

    Raw fields are read as strings, so ``"id": {"x": 1}`` arrives as the text ``{"x":1}``; as a
    business key it would open a bogus coin.
    """
    col = F.ltrim(F.col(col_name).cast("string"))
    bad = col.startswith("{") | col.startswith("[")
    return F.when(
        F.coalesce(bad, F.lit(False)),
        F.concat(F.lit(f"{label or col_name} must be text, found a JSON value "), F.substring(col, 1, 100)),
    )


def is_not_before(col_name: str, earliest: str) -> Column:
    """``col_name`` must not be before ``earliest`` (an ISO timestamp) when present.

    Catches zero-epoch sentinels (``1970-01-01T00:00:00Z``) and similar defaults, which would
    otherwise open a silver history decades before the market existed.
    """
    col = F.col(col_name)
    bad = col < F.lit(earliest).cast("timestamp")
    return F.when(
        F.coalesce(bad, F.lit(False)),
        F.concat(F.lit(f"{col_name} must be at or after {earliest}, found "), _found(col_name)),
    )


def is_not_greater(left: str, right: str) -> Column:
    """``left <= right`` when both are present (e.g. ``low_24h <= high_24h``)."""
    bad = F.col(left) > F.col(right)
    return F.when(
        F.coalesce(bad, F.lit(False)),
        F.concat(F.lit(f"{left} must be <= {right}, found "), _found(left), F.lit(" > "), _found(right)),
    )


def _raw_text(raw: str) -> Column:
    return F.coalesce(F.substring(F.col("_raw")[raw], 1, 100), F.lit("NULL"))


def _loose(raw: str) -> Column:
    """The raw field converted without bounds (a number incl. NaN/±Infinity, any Spark timestamp)."""
    col = F.col("_raw")[raw]
    return parse_timestamp(col) if raw in TIMESTAMP_FIELDS else parse_double(col)


def has_valid_types(fields: dict[str, str] | None = None) -> Column:
    """Every raw field that is present must convert to its type (a number, an ISO timestamp).

    Values of the right type that a sink cannot hold (NaN, ±Infinity, out-of-range ranks and
    dates) are not type errors; :func:`is_representable` names them.
    """
    fields = fields or TYPED_FIELDS
    bad = [F.when(F.col("_raw")[raw].isNotNull() & _loose(raw).isNull(), F.lit(raw)) for raw in fields]
    names = F.array_compact(F.array(*bad))
    return F.when(
        F.size(names) > 0,
        F.concat(F.lit("wrong type (not a number or timestamp): "), F.array_join(names, ", ")),
    )


def is_representable(raw: str, col_name: str, expected: str) -> Column:
    """A raw value of the right type must fit ``col_name`` (parsing made it NULL when it did not).

    E.g. ``NaN``/``Infinity`` for a DOUBLE, ``3e9`` for an INT rank, a year-1 date for a timestamp
    the warehouse (pandas nanoseconds) cannot hold.

    Args:
        raw: the raw field in ``_raw``.
        col_name: the typed column.
        expected: what was expected, for the message.
    """
    bad = _loose(raw).isNotNull() & F.col(col_name).isNull()
    return F.when(
        F.coalesce(bad, F.lit(False)),
        F.concat(F.lit(f"{col_name} must be {expected}, found "), _raw_text(raw)),
    )


def is_short_text(raw: str, col_name: str, *, max_chars: int) -> Column:
    """The raw text field must be at most ``max_chars`` characters long."""
    bad = F.length(F.col("_raw")[raw]) > max_chars
    return F.when(
        F.coalesce(bad, F.lit(False)),
        F.concat(
            F.lit(f"{col_name} must be at most {max_chars} characters, found "),
            F.length(F.col("_raw")[raw]).cast("string"),
        ),
    )


def is_sink_time(col_name: str, *, raw_col: str) -> Column:
    """A raw envelope time (``raw_col``) must parse to a time the sinks hold (``col_name`` not NULL)."""
    bad = parse_timestamp(F.col(raw_col)).isNotNull() & F.col(col_name).isNull()
    return F.when(
        F.coalesce(bad, F.lit(False)),
        F.concat(
            F.lit(f"{col_name} must be in [{MIN_SINK_TIME}, {MAX_SINK_TIME}), found "),
            F.substring(F.col(raw_col), 1, 100),
        ),
    )


def _action(column: str) -> Action:
    """``quarantine`` for a field whose unfit value must not reach silver (the price, the amounts
    that drive categories, gold sums and z-scores, the observation time), else ``warn`` (NULL)."""
    return "quarantine" if FIELDS_BY_COLUMN[column].quarantine_unrepresentable else "warn"


def representation_rules() -> list[Rule]:
    """One rule per typed field for values of the right type that no sink can hold (see README)."""
    finite = "a finite number (not NaN or Infinity)"
    when = f"a time in [{MIN_SINK_TIME}, {MAX_SINK_TIME})"
    rules = [
        Rule(
            f"{col}_not_finite",
            is_representable(raw, col, finite),
            _action(col),
        )
        for raw, col in NUMERIC_FIELDS.items()
    ]
    rules += [
        Rule(f"{col}_out_of_range", is_representable(raw, col, "an integer in [-2^31, 2^31-1]"), _action(col))
        for raw, col in INT_FIELDS.items()
    ]
    rules += [
        Rule(
            f"{col}_out_of_range",
            is_representable(raw, col, when),
            _action(col),
        )
        for raw, col in TIMESTAMP_FIELDS.items()
    ]
    rules.append(
        Rule("extracted_at_out_of_range", is_sink_time("extracted_at", raw_col="_fetched_at_text"), "warn")
    )
    return rules


def default_rules(*, max_future_seconds: int = 86400) -> list[Rule]:
    """The default expectations of the issue: key fields, prices, amounts, times, high/low.

    The table of fields, rules and actions is in the README ("Expectations").
    """
    return [
        Rule("unparseable", unparseable(), "quarantine", record_level=False),
        Rule("wrong_type", has_valid_types()),
        *representation_rules(),
        Rule("coin_id_is_null", is_not_null("coin_id")),
        Rule("vs_currency_is_null", is_not_null("vs_currency")),
        Rule("symbol_is_null", is_not_null("symbol")),
        Rule("coin_id_not_text", is_plain_text("coin_id")),
        Rule("symbol_not_text", is_plain_text("symbol")),
        Rule("coin_id_too_long", is_short_text("id", "coin_id", max_chars=MAX_KEY_CHARS)),
        Rule("symbol_too_long", is_short_text("symbol", "symbol", max_chars=MAX_KEY_CHARS)),
        Rule("last_updated_is_null", is_not_null("last_updated")),
        Rule("current_price_not_positive", is_positive_finite("current_price")),
        Rule("market_cap_negative", is_not_negative("market_cap")),
        Rule("total_volume_negative", is_not_negative("total_volume")),
        Rule(
            "last_updated_in_future", is_not_in_future("last_updated", max_ahead_seconds=max_future_seconds)
        ),
        Rule("last_updated_too_old", is_not_before("last_updated", EARLIEST_MARKET_TIME)),
        Rule("low_24h_above_high_24h", is_not_greater("low_24h", "high_24h")),
        Rule("name_not_text", is_plain_text("_raw.name", label="name"), "warn"),
        Rule("name_too_long", is_short_text("name", "name", max_chars=MAX_NAME_CHARS), "warn"),
        Rule("name_is_null", is_not_null("name"), "warn"),
        Rule("market_cap_rank_is_null", is_not_null("market_cap_rank"), "warn"),
    ]


def check_col(rule: Rule) -> str:
    """The column holding a rule's outcome."""
    return CHECK_PREFIX + rule.name


def with_rule_checks(df: DataFrame, rules: list[Rule]) -> DataFrame:
    """Add one ``dq_<rule>`` column per rule (NULL or the message)."""
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise ValueError(f"rule names must be unique, found {names}")
    parsed = F.col("parse_error").isNull()
    return df.withColumns(
        {check_col(r): (F.when(parsed, r.check) if r.record_level else r.check) for r in rules}
    )


def with_errors(df: DataFrame, rules: list[Rule]) -> DataFrame:
    """Gather the blocking outcomes (quarantine and fail) into ``failed_rules`` and ``errors`` arrays."""
    blocking = [r for r in rules if r.action != "warn"]
    names = F.array(*[F.when(F.col(check_col(r)).isNotNull(), F.lit(r.name)) for r in blocking])
    messages = F.array(
        *[
            F.when(F.col(check_col(r)).isNotNull(), F.concat(F.lit(r.name + ": "), F.col(check_col(r))))
            for r in blocking
        ]
    )
    return df.withColumn("failed_rules", F.array_compact(names)).withColumn(
        "errors", F.array_compact(messages)
    )


def split_valid_invalid(df: DataFrame, rules: list[Rule]) -> tuple[DataFrame, DataFrame]:
    """Split rows into those that pass every blocking rule and those to quarantine.

    Args:
        df: parsed records; rule checks are added unless ``dq_*`` columns are already present.
        rules: the expectations.

    Returns:
        ``(valid_df, quarantine_df)``; both carry the ``dq_*`` checks, ``failed_rules`` and ``errors``.
    """
    if not all(check_col(r) in df.columns for r in rules):
        df = with_rule_checks(df, rules)
    if "errors" not in df.columns:
        df = with_errors(df, rules)
    is_valid = F.size("errors") == 0
    return df.filter(is_valid), df.filter(~is_valid)


def rule_count_exprs(rules: list[Rule]) -> list[Column]:
    """Aggregate expressions counting each rule's failures, aliased ``dq_<rule>``."""
    return [F.count(F.col(check_col(r))).alias(check_col(r)) for r in rules]


def counts_by_action(row: dict[str, int], rules: list[Rule]) -> dict[str, dict[str, int]]:
    """Split collected rule counts into ``{"warn": {...}, "quarantine": {...}, "fail": {...}}`` (nonzero only)."""
    out: dict[str, dict[str, int]] = {a: {} for a in ACTIONS}
    for r in rules:
        n = int(row.get(check_col(r)) or 0)
        if n:
            out[r.action][r.name] = n
    return out


def raise_on_fail(fail_counts: dict[str, int]) -> None:
    """Raise :class:`DataQualityError` naming every ``fail`` rule that was violated."""
    if fail_counts:
        detail = ", ".join(f"{k}={v}" for k, v in sorted(fail_counts.items()))
        raise DataQualityError(f"expectations with action 'fail' were violated ({detail}); batch stopped")
