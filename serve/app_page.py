"""The script `streamlit run` executes for bonify-app (see serve/app.py); Streamlit reruns it
on every interaction."""

from serve.app import render_page

render_page()
