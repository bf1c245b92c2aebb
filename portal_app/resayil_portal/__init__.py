"""Resayil Gateway web portal plugin."""
