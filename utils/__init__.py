"""Shared utilities: logging, metrics, I/O helpers."""
