"""Exceptions raised by cellmaps."""


class CellmapsInputError(ValueError):
    """Bad user input: the message names the file (when there is one) and the problem."""

    def __init__(self, problem: str, path: object | None = None) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)
