"""Helpers shared by every process of the project: settings-driven CLIs and logging."""
