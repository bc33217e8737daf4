"""The one error type for bad user input: it names the field and the fix, and the CLI prints it on one line."""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input (a config value, a CSV cell, a blueprint field).

    The CLI prints ``error: <field>: <problem> (<fix>)`` on a single line and exits with code 2.
    """

    def __init__(self, field: str, problem: str, fix: str | None = None) -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        super().__init__(self.one_line())

    def __reduce__(self) -> tuple[type[InputError], tuple[str, str, str | None]]:
        # Exceptions pickle as cls(*args); ours takes three arguments. Ray sends a rank's InputError this way.
        return (InputError, (self.field, self.problem, self.fix))  # subclasses arrive as InputError

    def one_line(self) -> str:
        text = f"{self.field}: {self.problem}"
        if self.fix:
            text += f" ({self.fix})"
        # Never let user-supplied text break the one-line promise.
        return " ".join(text.split())
