"""Errors of the study layer, importable without Ray."""


class StudyError(RuntimeError):
    """The study cannot start or finish; the message says what to fix."""
