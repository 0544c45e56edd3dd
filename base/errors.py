"""Errors a user can act on: each names the file, key or item and what would be valid."""


class RecipeError(Exception):
    """The recipe (or a file it references) is invalid; nothing was built.

    `key` is the recipe key path when the message does not yet say which file it is in.
    """

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


class ItemError(Exception):
    """One work item cannot be built; the stage reports it with this reason and goes on."""


class BackendUnavailable(RuntimeError):
    """A backend cannot start (weights or a service missing); the message says how to fix it."""


class ChangedDuringBuild(ItemError):
    """A file's bytes are no longer those whose digest is in the item's key: it was edited
    after `compile` hashed it. Nothing is built from it under the old key; a rerun picks the
    new bytes up (with a new key)."""
