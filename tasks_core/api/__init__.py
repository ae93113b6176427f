"""The HTTP API (FastAPI): thin routes over ``tasks_core.usecases``."""
