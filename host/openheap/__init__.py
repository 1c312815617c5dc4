"""openheap: a grid of MicroPython boards that stores files and runs jobs."""

__version__ = "0.1.0"

__all__ = ["Executor", "__version__"]


def __getattr__(name):  # lazy: `import openheap` stays cheap for the board supervisors
    if name == "Executor":
        from openheap.compute.executor import Executor

        return Executor
    raise AttributeError("module 'openheap' has no attribute %r" % name)
