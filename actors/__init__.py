"""rayline: live X-ray detector stream processing (import package ``actors``)."""

__version__ = "0.1.0"
