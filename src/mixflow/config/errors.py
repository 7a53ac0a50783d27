"""The configuration error type (its own module so every config module can raise it)."""


class ConfigError(ValueError):
    """A configuration mistake; the message is one line naming the key."""
