"""History: your jobs (an admin in a team can switch to the team's), filtered, newest first, with downloads,
Remix into Transform (an edit into Edit), and Delete."""

import streamlit as st

from pipelines.params import Task
from studio.db.tables import JobStatus, Role
from studio.jobs.history import OWN_SETTINGS, HistoryFilter, history_page
from studio.jobs.retention import delete_job
from studio.web import app, auth, jobs, library, recipes, styles, widgets
from studio.web.text import plain

COLUMNS = 4
CURSORS = "history.cursors"  # the keyset cursor of each page shown so far (None: the first page)

user = auth.require_user()
config = app.settings()
catalogue = styles.catalogue_or_stop(config)
store = app.asset_store()

st.title("History")


def first_page() -> None:
    st.session_state[CURSORS] = [None]


with st.container(border=True):
    date_col, status_col, style_col, text_col = st.columns([2, 2, 2, 3])
    dates = date_col.date_input("Dates", value=(), key="history.dates", on_change=first_page)
    statuses = status_col.multiselect(
        "Status", [s.value for s in JobStatus], key="history.statuses", on_change=first_page
    )
    style = style_col.selectbox(
        "Style",
        [None, OWN_SETTINGS, *catalogue.styles],
        format_func=lambda s: {None: "Any", OWN_SETTINGS: "Own settings"}.get(s) or catalogue.styles[s].name,
        key="history.style",
        on_change=first_page,
    )
    text = text_col.text_input("Prompt contains", key="history.text", on_change=first_page)
    team = False
    if user.role is Role.admin and user.team_id is not None:
        team = st.toggle("My team's jobs", key="history.team", on_change=first_page)

filters = HistoryFilter(
    since=dates[0] if len(dates) > 0 else None,
    until=dates[1] if len(dates) > 1 else (dates[0] if len(dates) == 1 else None),
    statuses=tuple(JobStatus(s) for s in statuses),
    style=style,
    text=text,
    team=team,
)
cursors = st.session_state.setdefault(CURSORS, [None])
with app.db_session() as session:
    page = history_page(session=session, viewer=user, filters=filters, after=cursors[-1])

if not page.rows:
    st.info("No jobs match." if len(cursors) > 1 or filters != HistoryFilter() else "No jobs yet.")
    st.page_link("pages/transform.py", label="Go to Transform", icon=":material/auto_fix_high:")

columns = st.columns(COLUMNS)
for index, row in enumerate(page.rows):
    job = row.job
    with columns[index % COLUMNS].container(border=True):
        shown = row.result or row.source
        if shown is not None and store.exists(shown.sha256):
            st.image(widgets.thumbnail(shown.sha256, str(store.root)), width="stretch")
        else:
            st.caption(":material/hide_image: images deleted (retention)")
        st.markdown(f"**#{job.id}** · {job.status.value} · {job.created_at:%Y-%m-%d %H:%M}")
        st.caption(plain(jobs.job_summary(job)))  # the prompt, as typed: never markup (an admin sees team jobs)
        if job.error:
            st.caption(f":material/error: {plain(job.error)} · {job.cost} credits refunded")
        # Buttons side by side while they fit, wrapping below each other when the card is narrow.
        actions = st.container(horizontal=True, gap="small")
        if row.result is not None and store.exists(row.result.sha256):
            actions.download_button(
                "Download",
                store.read(row.result.sha256),
                file_name=f"img2img-{job.id}.png",
                mime="image/png",
                icon=":material/download:",
                key=f"dl-{job.id}",
            )
            if job.user_id == user.id:  # a library holds one's own images (an admin may be viewing the team's)
                with actions:
                    library.open_in(user_id=user.id, job_id=job.id, key=f"history-{job.id}")
        if actions.button(
            "Remix", icon=":material/tune:", key=f"remix-{job.id}", help="Open its page with this job's settings."
        ):
            settings_used = {**job.params, "style": job.style, "quality": job.quality, **(job.recipe or {})}
            page = "edit" if job.task == Task.edit else "transform"
            recipes.load_recipe_into_form(page, settings_used, catalogue)
            st.switch_page(f"pages/{page}.py")
        if job.status.is_final and actions.button(
            "Delete", icon=":material/delete:", key=f"delete-{job.id}", help="Its images go; the credits record stays."
        ):
            with app.db_write_session() as session:
                delete_job(session=session, store=store, user=user, job_id=job.id)
            st.rerun()

newer_col, page_col, older_col = st.columns([1, 2, 1])
if len(cursors) > 1 and newer_col.button("← Newer", key="history.newer"):
    cursors.pop()
    st.rerun()
page_col.caption(f"Page {len(cursors)}")
if page.next_cursor is not None and older_col.button("Older →", key="history.older"):
    cursors.append(page.next_cursor)
    st.rerun()
