"""The sweep's progress bar estimates the remaining time from steps, not from the start-up
(issue 18: its first estimate was hundreds of hours)."""
import io
from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from bench.executors import SweepProgress


@dataclass
class FakeSpec:
    name: str
    steps: int
    budget: float = 1.0

    @property
    def preset(self):       # a per-step preset: a run is expected to take its ``steps``
        return SimpleNamespace(steps=self.steps, protocol="steps")

    def run_name(self) -> str:
        return self.name


@pytest.fixture
def progress():
    """Two runs of 50 steps and one already finished on disk, on a clock the test moves: the
    bar was made at t = 0."""
    bar = SweepProgress([FakeSpec("a", 50), FakeSpec("b", 50), FakeSpec("done", 10)],
                        file=io.StringIO())
    clock = [0.0]
    bar.bar._time = lambda: clock[0]           # tqdm reads every time through this attribute
    bar.bar.start_t = bar.bar.last_print_t = 0.0
    bar.clock = clock
    yield bar
    bar.close()


def shown(progress) -> str:
    return str(progress.bar)


def test_no_estimate_before_a_step_has_been_timed(progress):
    assert "<" not in shown(progress) and "?" not in shown(progress)
    progress.finish("done")                    # read back from disk: no step was trained
    assert "10/110" in shown(progress) and "<" not in shown(progress)
    progress.clock[0] = 3600.0                 # an hour of start-up, then the first step
    progress.set_steps("a", 1, 0.25, 100)
    text = shown(progress)
    assert "11/110" in text and "acc=0.250" in text and "[1:00:00" in text
    assert "<" not in text and "step/s" not in text and "s/step" not in text


def test_the_estimate_counts_from_the_first_step_not_the_start_up(progress):
    progress.finish("done")
    progress.clock[0] = 3600.0
    progress.set_steps("a", 1, 0.25, 100)
    progress.clock[0] = 3610.0                 # then 10 s a step
    progress.set_steps("b", 1, 0.5, 100)
    text = shown(progress)
    # 98 steps left at 0.1 step/s: 980 s, where the start-up would make it days
    assert "12/110" in text and "<16:20" in text and "10.00s/step" in text, text


def test_the_last_line_keeps_the_same_estimate(progress):
    progress.clock[0] = 3600.0
    progress.set_steps("a", 1, 0.25, 100)
    progress.close()                           # tqdm redraws the bar once more on closing
    drawn = progress.bar.fp.getvalue()
    assert drawn.rstrip().endswith("[1:00:00, acc=0.250, run=a, tok=100]"), drawn
