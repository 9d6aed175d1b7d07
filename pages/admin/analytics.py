"""Admin · Analytics: credits and jobs over time, failures and refunds, processing and queue times, top spenders.
Every figure is a SQL aggregate (studio.analytics.usage); each chart offers the table behind it as CSV."""

import plotly.express as px
import streamlit as st

from studio.db.tables import Role
from studio.web import analytics, auth

auth.require_user(Role.admin)

st.title("Analytics")
usage, bucket, breakdown = analytics.usage_filter_inputs(analytics.usage_choices())
report = analytics.usage_report(usage, bucket, breakdown)
st.caption(
    "UTC days; a job counts on the day it was submitted. Credits spent: prices of jobs not refunded "
    "(queued and running jobs included). Percentiles are nearest-rank."
)
if report.statuses.empty:
    st.info("No jobs match these filters.")
    st.stop()

jobs_col, credits_col, failure_col, refund_col = st.columns(4)
jobs_col.metric("Jobs", f"{report.overall['jobs']:,}")
credits_col.metric("Credits spent", f"{int(report.credits['credits'].sum()) if not report.credits.empty else 0:,}")
failure_col.metric("Failure rate", f"{report.overall['failure_rate']:.1%}", help="Failed ÷ jobs that ended.")
refund_col.metric("Refund rate", f"{report.overall['refund_rate']:.1%}", help="Credits refunded ÷ credits reserved.")

st.subheader(f"Credits spent per {bucket.value}, by {breakdown.value}")
st.plotly_chart(
    analytics.per_period(px.bar(report.credits, x="period", y="credits", color="group")), key="chart-credits"
)
analytics.csv_download("Download CSV", report.credits, f"credits-per-{bucket.value}-by-{breakdown.value}.csv")

st.subheader(f"Jobs per {bucket.value}, by status")
st.plotly_chart(
    analytics.per_period(px.bar(report.statuses, x="period", y="jobs", color="status")), key="chart-statuses"
)
analytics.csv_download("Download CSV", report.statuses, f"jobs-per-{bucket.value}-by-status.csv")

st.subheader("Failure and refund rates")
rates = px.line(report.rates, x="period", y=["failure_rate", "refund_rate"], markers=True)
rates.update_yaxes(tickformat=".0%", title="rate")
analytics.per_period(rates)
st.plotly_chart(rates, key="chart-rates")
analytics.csv_download("Download CSV", report.rates, f"failure-and-refund-rates-per-{bucket.value}.csv")

for title, frame, name in (
    ("Processing time per model and quality (complete jobs)", report.processing, "processing-times"),
    ("Queue wait per model and quality", report.waits, "queue-waits"),
):
    st.subheader(title)
    if frame.empty:
        st.caption("No jobs ran in this range.")
        continue
    labelled = frame.assign(model_quality=frame["model"] + " · " + frame["quality"])
    figure = px.bar(labelled, x="model_quality", y=["p50_s", "p95_s"], barmode="group", hover_data=["jobs"])
    figure.update_layout(xaxis_title=None, yaxis_title="seconds")
    st.plotly_chart(figure, key=f"chart-{name}")
    st.caption(analytics.PERCENTILE_NOTE)
    analytics.csv_download("Download CSV", frame, f"{name}.csv")

left, right = st.columns(2)
with left:
    st.subheader("Queue wait: Pro vs Free")
    if not report.priority_waits.empty:
        waits = px.bar(report.priority_waits, x="queue", y=["p50_s", "p95_s"], barmode="group", hover_data=["jobs"])
        waits.update_layout(yaxis_title="seconds")
        st.plotly_chart(waits, key="chart-priority-waits")
        analytics.csv_download("Download CSV", report.priority_waits, "queue-wait-by-plan.csv")
with right:
    st.subheader("Top spenders")
    if not report.spenders.empty:
        spenders = px.bar(report.spenders, x="credits", y="username", orientation="h", hover_data=["team", "jobs"])
        spenders.update_yaxes(autorange="reversed", title=None)
        st.plotly_chart(spenders, key="chart-top-spenders")
        analytics.csv_download("Download CSV", report.spenders, "top-spenders.csv")
