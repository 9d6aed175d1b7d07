"""Every Streamlit helper the pages use: the only place besides pages/ and streamlit_app.py that imports
streamlit. Logic lives in the domain packages; these modules draw it."""
