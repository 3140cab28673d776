"""The detector simulator: realistic synthetic frames sent with the real wire protocols."""
