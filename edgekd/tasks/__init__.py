"""Tasks: what a model outputs and how it is scored (classification, embedding), as plugins."""

from .base import TASKS, Agreement, Scoring, Task, task_for
from .classification import Classification
from .embedding import Embedding, embedding_scores

__all__ = ["TASKS", "Agreement", "Classification", "Embedding", "Scoring", "Task", "embedding_scores", "task_for"]
