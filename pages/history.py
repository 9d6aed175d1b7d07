"""History: the user's past jobs, newest first, with thumbnails and downloads."""

import math

import streamlit as st

from studio import ui
from studio.jobs import count_user_jobs, list_user_jobs

PAGE_SIZE = 12
COLUMNS = 4

user = ui.require_user()
store = ui.asset_store()

st.title("History")

with ui.db_session() as session:
    total = count_user_jobs(session=session, user_id=user.id)
    if total == 0:
        st.info("No jobs yet. Transform an image and it will appear here.")
        st.page_link("pages/transform.py", label="Go to Transform", icon=":material/auto_fix_high:")
        st.stop()
    pages = math.ceil(total / PAGE_SIZE)
    page = st.number_input(f"Page (of {pages})", 1, pages, 1) if pages > 1 else 1
    rows = list_user_jobs(session=session, user_id=user.id, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)

st.caption(f"{total} job{'s' if total != 1 else ''}")
columns = st.columns(COLUMNS)
for index, (job, source, result) in enumerate(rows):
    with columns[index % COLUMNS].container(border=True):
        shown = result or source
        st.image(ui.thumbnail(shown.sha256, str(store.root)), width="stretch")
        st.markdown(f"**#{job.id}** · {job.status.value} · {job.created_at:%Y-%m-%d %H:%M}")
        st.caption(ui.job_summary(job))
        if job.error:
            st.caption(f":material/error: {job.error}")
        if result is not None:
            st.download_button(
                "Download",
                data=store.read(result.sha256),
                file_name=f"img2img-{job.id}.png",
                mime="image/png",
                key=f"history-download-{job.id}",
            )
