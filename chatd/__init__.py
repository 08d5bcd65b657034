"""chatd: a small, fast, trustworthy chat server on Twisted."""

__version__ = "0.1.0"
