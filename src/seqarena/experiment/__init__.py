"""Comparisons: many training runs, their learning-rate search, where they run, and the one summary after them."""
