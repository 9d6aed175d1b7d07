"""Img2Img Studio domain code: settings, database, users, jobs, storage and validation.

Nothing here imports torch, diffusers or streamlit (except `studio.ui`, the small Streamlit
helper module); pages import this cheaply and the model code runs only in `pipelines`.
"""
