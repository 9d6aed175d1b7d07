"""Compare: a source and its result, or any two results, side by side, with a split slider, the same zoom
on both, a difference heatmap, and what differs between their recipes."""

import streamlit as st
from PIL import Image

from studio.jobs.queries import list_user_jobs
from studio.media.compare import (
    CENTRE_STEP,
    MAX_ZOOM,
    ZOOM_STEP,
    difference,
    recipe_differences,
    same_size,
    split_view,
    zoomed,
)
from studio.web import app, auth, jobs, library

SOURCE_AND_RESULT, TWO_RESULTS = "Source and result", "Two results"

user = auth.require_user()
store = app.asset_store()

st.title("Compare")

with app.db_session() as session:
    finished = [
        (job, source, result)
        for job, source, result in list_user_jobs(session=session, user_id=user.id, limit=200)
        if result is not None
    ]
if not finished:
    st.info("Nothing to compare yet: finished results appear here.")
    st.stop()
by_id = {job.id: (job, source, result) for job, source, result in finished}
ids = list(by_id)
library.preselect_job("compare.first", user, ids)  # a result opened in Compare, or the source the user works on

mode = st.segmented_control("Compare", [SOURCE_AND_RESULT, TWO_RESULTS], default=SOURCE_AND_RESULT, key="compare.mode")
first_id = st.selectbox(
    "Result", ids, format_func=lambda i: f"#{i} · {jobs.job_summary(by_id[i][0])}", key="compare.first"
)
job, source, result = by_id[first_id]
if mode == TWO_RESULTS:
    second_id = st.selectbox(
        "Against",
        ids,
        index=min(1, len(ids) - 1),
        format_func=lambda i: f"#{i} · {jobs.job_summary(by_id[i][0])}",
        key="compare.second",
    )
    left, right = (result, f"#{first_id}"), (by_id[second_id][2], f"#{second_id}")
    recipes = (job.recipe or {}, by_id[second_id][0].recipe or {})
else:
    if source is None:
        st.warning("This job's source was deleted (retention); compare two results instead.")
        st.stop()
    left, right = (source, "source"), (result, f"result #{first_id}")
    recipes = None

first, second = same_size(Image.open(store.path(left[0].sha256)), Image.open(store.path(right[0].sha256)))

view = st.segmented_control(
    "View", ["Side by side", "Slider", "Difference"], default="Side by side", key="compare.view"
)
zoom_col, x_col, y_col = st.columns(3)
zoom = zoom_col.slider("Zoom (both)", min_value=1.0, max_value=MAX_ZOOM, value=1.0, step=ZOOM_STEP, key="compare.zoom")
center = tuple(
    column.slider(
        f"Centre {axis}",
        min_value=0.0,
        max_value=1.0,
        value=0.5,
        step=CENTRE_STEP,
        key=f"compare.{axis}",
        disabled=zoom == 1,
    )
    for column, axis in ((x_col, "x"), (y_col, "y"))
)
first_view, second_view = zoomed(first, zoom, center), zoomed(second, zoom, center)

if view == "Slider":
    split = st.slider(f"◀ {left[1]} · {right[1]} ▶", min_value=0, max_value=100, value=50, key="compare.split")
    st.image(split_view(first_view, second_view, split / 100), width="stretch")
elif view == "Difference":
    diff = difference(first_view, second_view)
    st.image(diff.heatmap, caption="Black: identical · red to yellow: more different", width="stretch")
    st.caption(
        f"Mean difference {diff.mean} / 255 per channel · {diff.changed:.1%} of pixels differ by more than 8 levels"
    )
else:
    for column, image, label in zip(st.columns(2), (first_view, second_view), (left[1], right[1]), strict=True):
        column.image(image, caption=label, width="stretch")

if recipes is not None:
    st.subheader("Recipes")
    changes = recipe_differences(*recipes)
    if changes:
        st.dataframe([{"setting": k, left[1]: str(a), right[1]: str(b)} for k, a, b in changes], hide_index=True)
    else:
        st.caption("The recipes are identical.")
    for column, recipe, label in zip(st.columns(2), recipes, (left[1], right[1]), strict=True):
        with column.expander(f"Recipe of {label}"):
            st.json(recipe)
