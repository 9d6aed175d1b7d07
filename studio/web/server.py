"""What README's `python -m studio serve` serves (`streamlit run studio/web/server.py`): the studio
(streamlit_app.py) with the model warm-up and the in-process queue worker started with the server, not at the first
page view (studio.web.serving.lifespan)."""

from pathlib import Path

import streamlit as st

from studio.web.serving import lifespan

# Absolute: `streamlit run` resolves a relative script path against this file's folder.
app = st.App(Path(__file__).resolve().parents[2] / "streamlit_app.py", lifespan=lifespan)
