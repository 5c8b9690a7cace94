"""User-facing errors: the CLI prints the message on one line and exits with code 2."""


class EdgepackError(Exception):
    """Bad input or an unrecoverable condition, explained in one line."""


class MissingExtraError(EdgepackError):
    """The packing side needs `pip install 'edgepack[pack]'`."""

    def __init__(self, module: str) -> None:
        super().__init__(
            f"this command needs the pack extra ({module} is not installed): "
            "pip install 'edgepack[pack]' (in a checkout: pip install '.[pack]')"
        )


class RecipeError(EdgepackError):
    """A recipe that does not validate; the message starts with the key path."""
