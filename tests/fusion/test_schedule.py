import json

import pytest

from ffexport.errors import ScheduleError
from ffexport.fusion.schedule import SCHEDULE_FORMAT, SCHEDULE_FORMAT_V1, Schedule, Stage, load_schedule


def sched(*stages, n=64, p=16):
    return Schedule(n, p, tuple(Stage(*s) for s in stages))


def test_round_trip(tmp_path):
    s = sched((0, "before_attention", "merge", 40), (0, "after_attention", "merge", 5), (1, "after_attention", "prune", 9))
    path = s.save(tmp_path / "s.json")
    assert load_schedule(path) == s
    # one contiguous block: still written as version 1 (readers of version 1 keep working)
    assert json.loads(path.read_text())["format"] == SCHEDULE_FORMAT_V1
    assert s.visual_counts() == [24, 19, 10]
    assert s.final_visual_tokens == 10


def test_save_refuses_to_overwrite(tmp_path):
    s = sched()
    s.save(tmp_path / "s.json")
    with pytest.raises(Exception, match="--overwrite"):
        s.save(tmp_path / "s.json")
    s.save(tmp_path / "s.json", overwrite=True)


@pytest.mark.parametrize(
    "stages, message",
    [
        ([(0, "before_attention", "merge", 49)], "at most 48"),  # N - P = 48
        ([(0, "before_attention", "merge", 40), (0, "after_attention", "merge", 9)], "at most 8"),
        ([(0, "before_attention", "prune", 3)], "needs the attention"),
        ([(5, "after_attention", "merge", 3)], "unknown layer 5"),
        ([(0, "after_attention", "merge", -1)], "non-negative"),
        ([(1, "after_attention", "merge", 1), (0, "after_attention", "merge", 1)], "increasing"),
        ([(0, "after_attention", "merge", 1), (0, "after_attention", "prune", 1)], "increasing"),
        ([(0, "after_attention", "prune", 65)], "cannot prune 65"),
        ([(0, "after_attention", "squash", 1)], "'op' must be"),
        ([(0, "inside", "merge", 1)], "'where' must be"),
    ],
)
def test_impossible_schedules_are_refused(stages, message):
    with pytest.raises(ScheduleError, match=message):
        sched(*stages).validate(num_layers=4)


def test_a_schedule_must_keep_a_visual_token():
    with pytest.raises(ScheduleError, match="removes all 64 visual tokens"):
        sched((0, "after_attention", "prune", 64)).validate(4)
    sched((0, "after_attention", "prune", 63)).validate(4)
    sched((0, "before_attention", "merge", 48)).validate(4)


def test_n_must_be_a_multiple_of_p():
    with pytest.raises(ScheduleError, match="multiple"):
        Schedule(65, 16, ()).validate()


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "not a readable JSON"),
        ('{"format": "other/1"}', "'format' must be"),
        (json.dumps({"format": SCHEDULE_FORMAT, "visual_tokens": 64, "patches_per_frame": 16}), "malformed"),
        (json.dumps({"format": SCHEDULE_FORMAT, "visual_tokens": 64, "patches_per_frame": 16,
                     "stages": [{"layer": 0, "where": "before_attention", "op": "merge"}]}), "malformed"),
        ("[]", "expected a JSON object"),
    ],
)
def test_malformed_files(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ScheduleError, match=message):
        load_schedule(path)


def test_missing_file(tmp_path):
    with pytest.raises(ScheduleError, match="no such file"):
        load_schedule(tmp_path / "absent.json")
