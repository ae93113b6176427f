"""Helpers shared by the test rings: waiting on conditions, test databases."""
