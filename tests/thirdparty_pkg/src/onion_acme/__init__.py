"""Example third-party layers for onion (installed through the onion.middlewares entry point)."""

from .scrubber import SecretScrubber

__all__ = ["SecretScrubber"]
