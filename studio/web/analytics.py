"""The Analytics page's filters and report: the queries of studio.analytics, cached for a minute, as tables
for plotly and CSV downloads.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, time, timedelta

import pandas as pd
import streamlit as st
from sqlmodel import Session

from studio.analytics.usage import (
    Breakdown,
    Bucket,
    DurationStats,
    FilterChoices,
    UsageFilter,
    credits_spent,
    filter_choices,
    jobs_by_status,
    outcome_rates,
    processing_times,
    queue_waits,
    top_spenders,
    waits_by_priority,
)
from studio.db.engine import session_for
from studio.db.tables import utcnow
from studio.spreadsheets import frame_csv
from studio.web import app

REPORT_CACHE_SECONDS = 60
DEFAULT_RANGE_DAYS = 30
TOP_GROUPS = 10  # credits charts stack the ten biggest teams, users, styles or models and "Others"
PERCENTILE_NOTE = (
    "p50 and p95 are nearest-rank percentiles to two significant figures, rounded down: 0.1 s steps below 10 s, "
    "1 s below 100 s, 10 s below 1000 s."
)


def csv_download(label: str, table: pd.DataFrame, file_name: str) -> None:
    """A CSV download of the table behind a chart (formula-like text neutralised: studio.spreadsheets)."""
    st.download_button(label, frame_csv(table), file_name=file_name, mime="text/csv", key=f"csv-{file_name}")


def table(rows: list) -> pd.DataFrame:
    """Dataclass rows (a few aggregates, never raw jobs) as a DataFrame for a chart or a download."""
    return pd.DataFrame([dataclasses.asdict(row) for row in rows])


def duration_table(rows: list[DurationStats], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            dict(zip(columns, row.group, strict=True)) | {"jobs": row.jobs, "p50_s": row.p50_s, "p95_s": row.p95_s}
            for row in rows
        ]
    )


def usage_choices() -> FilterChoices:
    return _choices(app.settings().database_url)


@st.cache_data(ttl=REPORT_CACHE_SECONDS, show_spinner=False)
def _choices(database_url: str) -> FilterChoices:
    with session_for(database_url) as session:
        return filter_choices(session=session)


def usage_filter_inputs(choices: FilterChoices) -> tuple[UsageFilter, Bucket, Breakdown]:
    """The Analytics page's filters: date range (UTC days), team, user, model; period and breakdown."""
    today = utcnow().date()
    left, middle, right = st.columns(3)
    picked = left.date_input(
        "Dates",
        value=(today - timedelta(days=DEFAULT_RANGE_DAYS - 1), today),
        max_value=today,
        key="analytics.dates",
    )
    first, last = picked if isinstance(picked, tuple) and len(picked) == 2 else (picked[0], picked[0])
    team_id = middle.selectbox(
        "Team",
        [None, *choices.teams],
        format_func=lambda i: "All teams" if i is None else choices.teams[i],
        key="analytics.team",
    )
    user_id = right.selectbox(
        "User",
        [None, *choices.users],
        format_func=lambda i: "All users" if i is None else choices.users[i],
        key="analytics.user",
    )
    left, middle, right = st.columns(3)
    model = left.selectbox(
        "Model", [None, *choices.models], format_func=lambda m: m or "All models", key="analytics.model"
    )
    bucket = middle.segmented_control("Per", list(Bucket), default=Bucket.day, required=True, key="analytics.bucket")
    breakdown = right.segmented_control(
        "Credits by", list(Breakdown), default=Breakdown.team, required=True, key="analytics.breakdown"
    )
    usage = UsageFilter(
        start=utc_midnight(first),
        end=utc_midnight(last + timedelta(days=1)),
        team_id=team_id,
        user_id=user_id,
        model=model,
    )
    return usage, Bucket(bucket), Breakdown(breakdown)


def utc_midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


@dataclasses.dataclass(frozen=True)
class UsageReport:
    """Everything the Analytics page draws, from one pass over the queries behind it."""

    credits: pd.DataFrame
    statuses: pd.DataFrame
    rates: pd.DataFrame
    overall: dict
    processing: pd.DataFrame
    waits: pd.DataFrame
    priority_waits: pd.DataFrame
    spenders: pd.DataFrame


def usage_report(usage: UsageFilter, bucket: Bucket, breakdown: Breakdown) -> UsageReport:
    """The analytics queries for these filters, cached for a minute so reruns do not repeat them."""
    return _cached_report(app.settings().database_url, usage, bucket, breakdown)


@st.cache_data(ttl=REPORT_CACHE_SECONDS, show_spinner="Adding up usage…")
def _cached_report(database_url: str, usage: UsageFilter, bucket: Bucket, breakdown: Breakdown) -> UsageReport:
    with session_for(database_url) as session:
        return _report(session, usage, bucket, breakdown)


def _report(session: Session, usage: UsageFilter, bucket: Bucket, breakdown: Breakdown) -> UsageReport:
    statuses = jobs_by_status(session=session, usage=usage, bucket=bucket)
    *per_period, overall = outcome_rates(statuses)
    rate_rows = [
        {"period": r.period, "failure_rate": r.failure_rate, "refund_rate": r.refund_rate, "jobs": r.jobs}
        for r in per_period
    ]
    overall_row = {
        "jobs": overall.jobs,
        "failed": overall.failed,
        "cancelled": overall.cancelled,
        "failure_rate": overall.failure_rate,
        "credits_reserved": overall.credits_reserved,
        "credits_refunded": overall.credits_refunded,
        "refund_rate": overall.refund_rate,
    }
    return UsageReport(
        credits=table(credits_spent(session=session, usage=usage, bucket=bucket, by=breakdown, keep=TOP_GROUPS)),
        statuses=table(statuses),
        rates=pd.DataFrame(rate_rows),
        overall=overall_row,
        processing=duration_table(processing_times(session=session, usage=usage), ["model", "quality"]),
        waits=duration_table(queue_waits(session=session, usage=usage), ["model", "quality"]),
        priority_waits=duration_table(waits_by_priority(session=session, usage=usage), ["queue"]),
        spenders=table(top_spenders(session=session, usage=usage)),
    )


def per_period(figure):
    """Days or weeks as labels on the x axis: with a single period, a date axis would zoom into milliseconds."""
    figure.update_xaxes(type="category", title=None)
    return figure
