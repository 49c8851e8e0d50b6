"""fillcls.seqeval: the sequence figures (accuracy, flicker, delay, identity switches) on hand-made runs."""

import pytest

from fillcls.seqeval import Answer, Run, Truth, changes, delays, markdown, match, summarise, summarise_all

BOX = (100, 100, 150, 200)
FAR = (400, 100, 450, 200)  # no overlap with BOX: an answer there finds nothing


def _filling_run():
    """10 frames at 5 fps of one container: empty, a pour at frame 3, half, full from frame 7."""
    truth = [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    settled = [True, True, True, False, True, True, True, True, True, True]
    level = [0, 1, 0, 1, 1, 1, 1, 1, 2, 2]
    fused = [0, 0, 0, 0, 1, 1, 1, 1, 1, 2]
    track = [1, 1, 1, 1, 1, 2, 2, 2, 2, 2]
    run = Run("filling", 5.0, 10)
    for i in range(10):
        run.add_frame(i, [Truth(1, truth[i], settled[i], BOX)], [Answer(BOX, level[i], fused[i], track[i])])
    return run


def test_figures_of_a_hand_made_run():
    row = summarise("filling", [_filling_run()])
    assert row["n"] == 1 and row["truths"] == 9  # the pour frame is not scored
    assert row["acc_frame"] == pytest.approx(7 / 9) and row["acc_fused"] == pytest.approx(7 / 9)
    # 10 frames at 5 fps = 2 s: 4 per-frame changes = 120 per minute, 2 fused ones = 60
    assert row["flicker_frame"] == pytest.approx(120.0) and row["flicker_fused"] == pytest.approx(60.0)
    assert row["changes"] == 2
    assert row["delay_level"] == pytest.approx(0.5) and row["missed_level"] == 0  # 0 and 1 frames
    assert row["delay_fused"] == pytest.approx(1.5) and row["missed_fused"] == 0  # 1 and 2 frames
    assert row["id_switches"] == 1
    table = markdown([row], "footer line")
    assert "| filling x1 | 9 | 77.8 % | 77.8 % | 120.0 | 60.0 | 2 | 0.5 fr (0.1 s) | 1.5 fr (0.3 s) (0) | 1 |" in table
    assert table.rstrip().endswith("footer line")


def test_not_found_frames_and_never_reached_changes():
    run = Run("static", 5.0, 6)
    answers = [[Answer(BOX, 2, 2, 1)], [Answer(FAR, 0, 0, 7)], [Answer(BOX, 2, 2, 1)], [],
               [Answer(BOX, 1, 2, 3)], [Answer(BOX, 2, 2, 3)]]
    for i, a in enumerate(answers):
        run.add_frame(i, [Truth(1, 2, True, BOX)], a)
    assert [r.level for r in run.records] == [2, -1, 2, -1, 1, 2]
    assert [r.track for r in run.records] == [1, None, 1, None, 3, 3]
    row = summarise("static", [run])
    assert row["acc_frame"] == pytest.approx(3 / 6) and row["acc_fused"] == pytest.approx(4 / 6)
    assert row["flicker_frame"] == pytest.approx(2 / (6 / 5 / 60)) and row["flicker_fused"] == 0.0
    assert row["id_switches"] == 1 and row["changes"] == 0 and row["delay_fused"] is None
    assert "| static x1 | 6 |" in markdown([row]) and " - | - |" in markdown([row])
    assert delays([0, 0, 1, 1], [0, 0, 0, 0]) == [None]
    assert delays([0, 1, 1, 2, 2], [0, 0, 1, 1, 2]) == [1, 1]
    assert changes([0, -1, 0, None, 1, 1, 2]) == 2


def test_matching_is_one_to_one_by_overlap():
    truths = [Truth(1, 0, True, (0, 0, 100, 100)), Truth(2, 2, True, (80, 0, 180, 100))]
    answers = [Answer((85, 0, 180, 100), 2), Answer((0, 0, 90, 100), 0), Answer((0, 0, 100, 100), 1)]
    assert match(truths, answers) == {1: 2, 2: 0}  # the best overlap first; answer 1 is left over
    assert match(truths, [Answer((90, 0, 110, 50), 0)]) == {}  # IoU under MATCH_IOU with both
    runs = [Run("static", 5.0, 2), Run("crossing", 5.0, 2), Run("static", 5.0, 2)]
    assert [r["kind"] for r in summarise_all(runs)] == ["static", "crossing"]
    assert summarise_all(runs)[0]["n"] == 2
