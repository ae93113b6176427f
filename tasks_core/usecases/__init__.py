"""Use cases of the service: what the API (and Python callers) can do with tasks and states."""
