"""Img2Img Studio entrypoint: first-run setup, the login gate, and navigation by role."""

import streamlit as st

from studio import ui, ui_admin
from studio.models import Role

st.set_page_config(page_title="Img2Img Studio", page_icon=":material/palette:", layout="wide")

report = ui.bootstrap_studio()
config = ui.settings()
if config.warmup:
    ui.start_model_warmup(config)
if config.in_process_worker:
    ui.start_background_worker(config)

authenticator = ui.authenticator(report)
user = ui.current_user()
ui.forget_other_users_state(user)
if user is None:
    ui.login_form(authenticator)
    if ui.current_user() is not None:
        st.rerun()  # logged in just now: start over without the login form on screen
    st.navigation([st.Page(lambda: None, title="Log in", icon=":material/login:")], position="hidden").run()
    st.stop()

ui.refresh_plan_credits(user)

studio_pages = [
    st.Page("pages/transform.py", title="Transform", icon=":material/auto_fix_high:", default=True),
    st.Page("pages/inpaint.py", title="Inpaint", icon=":material/format_paint:"),
    st.Page("pages/sweep.py", title="Sweep", icon=":material/view_comfy:"),
    st.Page("pages/batch.py", title="Batch", icon=":material/photo_library:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("pages/history.py", title="History", icon=":material/history:"),
    st.Page("pages/account.py", title="Account", icon=":material/account_balance_wallet:"),
]
admin_pages = [
    st.Page("pages/admin_users.py", title="Users", icon=":material/group:"),
    st.Page("pages/admin_teams.py", title="Teams", icon=":material/groups:"),
    st.Page("pages/admin_credits.py", title="Credits", icon=":material/toll:"),
    st.Page("pages/analytics.py", title="Analytics", icon=":material/bar_chart:"),
    st.Page("pages/admin_models.py", title="Models", icon=":material/memory:"),
]
navigation = {"Studio": studio_pages}
if user.role is Role.admin:
    navigation["Admin"] = admin_pages

with st.sidebar:
    st.caption(f"Signed in as **{user.display_name}** ({user.username}, {user.role.value})")
    if st.button("Log out", icon=":material/logout:", key="studio_logout"):
        ui.log_out(authenticator)
    ui_admin.budget_alert(user)

st.navigation(navigation).run()
