"""QUEST Q&A Labeling pipeline: folds -> encode -> train -> validate -> ensemble -> submission."""

__version__ = "0.1.0"
