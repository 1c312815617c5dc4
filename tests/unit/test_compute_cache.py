"""The results cache (openheap.compute.cache)."""

from openheap.compute.cache import ResultCache
from openheap.compute.wire import dumps

CODE = bytes(range(32))


def test_values_and_errors_survive_reopening(tmp_path):
    path = tmp_path / "compute" / "results.db"
    c = ResultCache(path)
    c.put_value(CODE, "f", dumps([1]), dumps({"a": [1, 2.5, b"x"]}))
    c.put_error(CODE, "f", dumps([0]), ("ZeroDivisionError", "divide by zero"))
    assert c.get(CODE, "f", dumps([1])) == ("ok", {"a": [1, 2.5, b"x"]})  # before the flush too
    c.close()
    c = ResultCache(path)
    assert c.get(CODE, "f", dumps([1])) == ("ok", {"a": [1, 2.5, b"x"]})
    assert c.get(CODE, "f", dumps([0])) == ("error", ("ZeroDivisionError", "divide by zero"))
    assert c.get(CODE, "g", dumps([1])) is None
    assert c.get(bytes(32), "f", dumps([1])) is None
    assert c.hits == 2
    c.close()


def test_errors_about_the_board_are_not_kept(tmp_path):
    c = ResultCache(tmp_path / "r.db")
    for t in ("MemoryError", "Watchdog", "Timeout"):
        c.put_error(CODE, "f", dumps([t]), (t, "x"))
        assert c.get(CODE, "f", dumps([t])) is None
    c.close()


def test_many_results_are_batched(tmp_path):
    c = ResultCache(tmp_path / "r.db")
    for i in range(1000):
        c.put_value(CODE, "f", dumps([i]), dumps(i * i))
    c.flush()
    assert all(c.get(CODE, "f", dumps([i])) == ("ok", i * i) for i in range(0, 1000, 37))
    assert c.clear() == 1000
    c.close()
