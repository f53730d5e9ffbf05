"""Errors of the face search a user's input can cause (all ``ValueError``: exit 2)."""

from common.errors import ProjectError


class SearchInputError(ProjectError, ValueError):
    """Base of the errors below."""


class IndexFolderError(SearchInputError):
    """An index folder is missing, damaged, not an index, or may not be replaced."""


class IndexBusyError(IndexFolderError):
    """Another writer (a process, or another thread of this one) is changing the same
    index folder."""


class ModelPathError(SearchInputError):
    """``--model`` is neither an export nor a run folder, or encodes other codes."""


class GalleryInputError(SearchInputError):
    """A gallery or query input cannot be read at all (not: one bad photo among many)."""


class UnknownIdError(SearchInputError):
    """Gallery ids asked for that the index does not hold."""


class PreparationError(SearchInputError):
    """Photos would be cut into faces otherwise than the index's photos were (adding them
    would mix two preparations in one index), or the index's recorded preparation cannot
    be used here (its detector is not installed)."""
