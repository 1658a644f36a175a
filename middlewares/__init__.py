"""The built-in layers of onion, one concern per module.

They import only onion's public API, exactly as a third-party layer would.
"""

__all__: list[str] = []
