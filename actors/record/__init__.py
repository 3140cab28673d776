"""Recording live streams to files, replaying them, and reading other tools' dumps."""
