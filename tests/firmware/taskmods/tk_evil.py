# A task module that imports os when loaded: it never gets to run.
import os


def f():
    return os.listdir()
