"""Two processes that need the same cache entry: the second waits for the first, then reads it."""

import multiprocessing
import time
from pathlib import Path

from harmcore.run.stages import Stages


def _first(cache: str, started: str, release: str, computed: str) -> None:
    def compute():
        Path(started).touch()
        while not Path(release).exists():  # hold the entry's lock until the test lets go
            time.sleep(0.01)
        Path(computed).write_text(Path(computed).read_text() + "x" if Path(computed).exists() else "x")
        return ["from the first"]

    Stages(Path(cache)).cached("generations", {"k": 1}, compute, "stage")


def _second(cache: str, result: str) -> None:
    value = Stages(Path(cache)).cached("generations", {"k": 1}, lambda: ["from the second"], "stage")
    Path(result).write_text(value[0])


def test_a_second_process_waits_for_the_entry_and_reads_it(tmp_path):
    files = {k: str(tmp_path / k) for k in ("started", "release", "computed", "result")}
    ctx = multiprocessing.get_context("fork")
    first = ctx.Process(
        target=_first, args=(str(tmp_path / "cache"), files["started"], files["release"], files["computed"])
    )
    first.start()
    while not Path(files["started"]).exists():
        time.sleep(0.01)
    second = ctx.Process(target=_second, args=(str(tmp_path / "cache"), files["result"]))
    second.start()
    time.sleep(0.5)
    assert second.is_alive() and not Path(files["result"]).exists()  # blocked on the lock, not computing
    Path(files["release"]).touch()
    first.join(30)
    second.join(30)
    assert first.exitcode == second.exitcode == 0
    assert Path(files["result"]).read_text() == "from the first" and Path(files["computed"]).read_text() == "x"
