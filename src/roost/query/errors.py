"""The single error type of the expression language.

Every problem found while reading a filter, a rule, a sort spec or a field list is
reported as :class:`ExpressionError`: a ``ValueError`` naming the 0-based character
offset where the problem was found, so the HTTP layer can turn it into a 400.
"""

from __future__ import annotations


class ExpressionError(ValueError):
    """A filter, rule, sort or field-list text that cannot be used.

    ``str(error)`` reads ``"position 12: expected an operator after 'title'"``.
    """

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"position {position}: {message}")
        self.message = message
        self.position = position
