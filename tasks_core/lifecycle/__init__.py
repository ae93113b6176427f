"""The life of a task: every status change, event and Flow fan-in."""
