"""Exceptions of layoutops (a leaf module: it imports nothing from the package)."""

__all__ = ["LayoutError"]


class LayoutError(ValueError):
    """A layout string is invalid, or does not fit the array or the other operand.

    A subclass of :class:`ValueError`, so ``except ValueError`` catches it too.

    Examples
    --------
    >>> import layoutops as lo
    >>> try:
    ...     lo.Layout("NCHH")
    ... except lo.LayoutError as e:
    ...     print(e)
    layout 'NCHH': letter 'H' appears twice
    """
