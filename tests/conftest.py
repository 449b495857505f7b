"""Fixtures shared by several test modules."""

import pytest
import torch


@pytest.fixture()
def one_thread():
    """Tiny models run fastest on one thread: thousands of small kernels would otherwise wait on
    OpenMP's other threads, and stall when other work shares the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
