"""The tasks. Importing this package registers every built-in task."""

from seqarena.tasks.base import (TASKS, Batch, SequenceModel, Task, TaskConfig, describe_tasks,
                                 make_task, register_task)

# Each family registers its tasks on import.
from seqarena.tasks import synthetic  # noqa: E402,F401  copy, adding, selective-copy, mqar
from seqarena.tasks import listops  # noqa: E402,F401
from seqarena.tasks import demo  # noqa: E402,F401  seed-demo-classify, seed-demo-regress
from seqarena.tasks import text  # noqa: E402,F401  text-lm
from seqarena.tasks import digits  # noqa: E402,F401  digits-seq
from seqarena.tasks import forecast  # noqa: E402,F401
from seqarena.tasks import dates  # noqa: E402,F401
from seqarena.tasks import classify  # noqa: E402,F401
from seqarena.tasks import translate  # noqa: E402,F401
from seqarena.tasks import series  # noqa: E402,F401  series-classify
from seqarena.tasks import chomsky  # noqa: E402,F401  parity, even-pairs, reverse-string, ...

__all__ = ["TASKS", "Batch", "SequenceModel", "Task", "TaskConfig", "describe_tasks", "make_task",
           "register_task"]
