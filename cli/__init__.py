"""The command line: shared flag groups and the resolution of flags + a run's config + defaults into settings."""
