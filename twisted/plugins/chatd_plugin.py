"""Makes `twistd chatd` work; the service maker itself is in chatd/cli.py."""

from chatd.cli import service_maker as chatd  # noqa: F401  (twistd looks for it here)
