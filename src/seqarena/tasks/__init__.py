"""The tasks. Importing this package registers every built-in task."""

from seqarena.tasks.base import TASKS, Batch, Task, TaskConfig, make_task, register_task

__all__ = ["TASKS", "Batch", "Task", "TaskConfig", "make_task", "register_task"]
