"""A run folder's checkpoint states: their layout, the crash-safe store, index recovery."""
