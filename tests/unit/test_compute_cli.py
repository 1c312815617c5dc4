"""`openheap run` argument and input checks (no boards needed): every
mistake is one sentence on stderr and a non-zero exit, never a traceback."""

import pytest

from openheap.cli.main import main
from openheap.cli.run import parse_target, read_inputs
from openheap.errors import UsageError

JOB = "def sq(x):\n    return x * x\n"


def test_read_inputs(tmp_path):
    p = tmp_path / "in.jsonl"
    p.write_text('1\n\n"a"\n[1, 2]\n{"k": null}\n')
    assert read_inputs(str(p)) == [[1], ["a"], [[1, 2]], [{"k": None}]]
    assert read_inputs(str(p), spread=True) == [[1], ["a"], [1, 2], [{"k": None}]]
    p.write_text('1\n2\n[1,\n')
    with pytest.raises(UsageError, match="line 3 of"):
        read_inputs(str(p))
    with pytest.raises(UsageError, match="there is no inputs file"):
        read_inputs(str(tmp_path / "none"))


def test_parse_target():
    assert parse_target("a/b.py:f") == ("a/b.py", "f")
    for bad in ("job.py", ":f", "job.py:", "job.py:1x"):
        with pytest.raises(UsageError):
            parse_target(bad)


@pytest.mark.parametrize("argv, words", [
    (["run", "{d}/missing.py:sq", "--inputs", "{d}/in.jsonl"], "there is no file"),
    (["run", "{d}/job.py:nope", "--inputs", "{d}/in.jsonl"], "has no function nope"),
    (["run", "{d}/bad.py:f", "--inputs", "{d}/in.jsonl"], "does not compile (line 1)"),
    (["run", "{d}/job.py:sq"], "give the inputs"),
    (["run", "{d}/job.py:sq", "--inputs", "{d}/broken.jsonl"], "line 2 of"),
    (["run", "{d}/job.py:sq", "--inputs", "{d}/empty.jsonl"], "has no inputs"),
    (["run", "{d}/job.py:sq", "--inputs", "{d}/in.jsonl"], "coordinator is not running"),
    (["run", "{d}/job.py:sq", "--over", "oh:r1:nonsense"], "capability"),
    (["run", "{d}/job.py:sq", "--inputs", "{d}/in.jsonl", "--ship"], "--ship goes with --over"),
    (["run", "{d}/job.py:sq", "--inputs", "{d}/in.jsonl", "--retries", "-1"], "--retries"),
])
def test_bad_invocations(tmp_path, monkeypatch, capsys, argv, words):
    monkeypatch.setenv("OPENHEAP_HOME", str(tmp_path / "home"))
    (tmp_path / "job.py").write_text(JOB)
    (tmp_path / "bad.py").write_text("def f(:\n")
    (tmp_path / "in.jsonl").write_text("1\n2\n")
    (tmp_path / "broken.jsonl").write_text("1\n{x}\n")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(SystemExit) if "--retries" in argv else _nothing():
        status = main([a.replace("{d}", str(tmp_path)) for a in argv])
        assert status != 0
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False
