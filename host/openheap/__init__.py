"""openheap: a grid of MicroPython boards that stores files and runs jobs."""

__version__ = "0.1.0"
