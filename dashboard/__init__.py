"""Streamlit dashboard over the gold tables, read with delta-rs (see dashboard/app.py)."""
