"""Batch analysis of folders: discovery, resumable runs, CSV/JSON results."""
