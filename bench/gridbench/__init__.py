"""The pieces of ``bench/bench_grid.py`` (openheap vs Tahoe-LAFS), one job a module.

``bench/bench_grid.py`` is the command: it parses the flags, re-executes
itself inside a private network namespace (``outer``), and there runs the
benchmark (``inner``) with these modules:

* ``common``  -- paths, the grid's settings (3-of-10, happy 7, 10 nodes), ``log`` and ``sh``
* ``netns``   -- processes in the namespace, their memory and CPU time
* ``wire``    -- loopback set-up and the byte / packet / TCP counters, calibrated
* ``systems`` -- the two grids (``Openheap``, ``Tahoe``): start, stop, put and get by CLI and HTTP API
* ``runner``  -- timed put/get pairs on one grid, on both taking turns, and the ``--big`` file
* ``report``  -- the RESULTS.md section (tables, observations, method text)

Imported with ``bench/`` on ``sys.path`` (the script's own folder), like
``benchlib``.
"""
