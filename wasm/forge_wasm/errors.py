"""The one error the browser Mold raises on purpose; its message is what the page shows."""


class ModelError(Exception):
    """The model's files are unusable here (a bad header, a missing tensor, too many tokens)."""
