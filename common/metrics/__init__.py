"""Retrieval metrics over binary codes."""
