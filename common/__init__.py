"""Shared machinery for the face-hashing methods: data, metrics, layers, training, export."""
