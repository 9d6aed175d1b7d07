"""Img2Img Studio entrypoint: first-run setup, the login gate, and navigation by role."""

import streamlit as st

from studio.db.tables import Role
from studio.web import app, auth, budgets, cookies, onboarding, serving
from studio.web.text import plain

st.set_page_config(page_title="Img2Img Studio", page_icon=":material/palette:", layout="wide")

app.bootstrap_studio()
serving.start(app.settings())  # a worker in this process, if asked for (`serve --worker thread`, `streamlit run`)

user = auth.current_user()
auth.forget_other_users_state(user)
cookies.write_pending()  # the session cookie of a sign-in (or its deletion), until the browser has stored it
if user is None:
    # The form runs as a page: a widget drawn before st.navigation on a session's first run gets another identity
    # than on the next run, so what was typed into it the first time would be lost.
    st.navigation([st.Page(auth.login_page, title="Log in", icon=":material/login:")], position="hidden").run()
    st.stop()

auth.refresh_plan_credits(user)

studio_pages = [
    st.Page("pages/transform.py", title="Transform", icon=":material/auto_fix_high:", default=True),
    st.Page("pages/edit.py", title="Edit", icon=":material/edit_note:"),
    st.Page("pages/inpaint.py", title="Inpaint", icon=":material/format_paint:"),
    st.Page("pages/outpaint.py", title="Expand", icon=":material/open_in_full:"),
    st.Page("pages/sweep.py", title="Sweep", icon=":material/view_comfy:"),
    st.Page("pages/batch.py", title="Batch", icon=":material/photo_library:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("pages/history.py", title="History", icon=":material/history:"),
    st.Page("pages/account.py", title="Account", icon=":material/account_balance_wallet:"),
]
# Admin pages live in pages/admin/; their URLs stay what they were (/admin_users, …) for bookmarks.
admin_pages = [
    st.Page("pages/admin/users.py", title="Users", icon=":material/group:", url_path="admin_users"),
    st.Page("pages/admin/teams.py", title="Teams", icon=":material/groups:", url_path="admin_teams"),
    st.Page("pages/admin/kits.py", title="Brand kits", icon=":material/palette:", url_path="admin_kits"),
    st.Page("pages/admin/credits.py", title="Credits", icon=":material/toll:", url_path="admin_credits"),
    st.Page("pages/admin/analytics.py", title="Analytics", icon=":material/bar_chart:", url_path="analytics"),
    st.Page("pages/admin/models.py", title="Models", icon=":material/memory:", url_path="admin_models"),
]
navigation = {"Studio": studio_pages}
if user.role is Role.admin:
    navigation["Admin"] = admin_pages

with st.sidebar:
    st.caption(f"Signed in as **{plain(user.display_name)}** ({user.username}, {user.role.value})")
    if st.button("Log out", icon=":material/logout:", key="studio_logout"):
        auth.log_out()
    budgets.budget_alert(user)

# Every page listed: an admin has 16, and a collapsed menu (Streamlit's default past twelve) hides the admin pages.
page = st.navigation(navigation, expanded=True)
onboarding.getting_started(user)  # the pages must be registered (st.navigation) before it links to them
page.run()
