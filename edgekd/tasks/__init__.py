"""Tasks: what a model outputs and how it is scored (classification, embedding, detection), as plugins."""

from .base import TASKS, Agreement, Scoring, Task, task_for, task_for_labels
from .classification import Classification
from .detection import Detection
from .embedding import Embedding, embedding_scores

__all__ = ["TASKS", "Agreement", "Classification", "Detection", "Embedding", "Scoring", "Task", "embedding_scores",
           "task_for", "task_for_labels"]
