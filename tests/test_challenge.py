"""The workshop challenge: settings checked before any work, pictures judged right only when every
attribute matches, entries ranked by correct pictures then seconds, reports that a teacher
collects and ranks, and the command line that plays it."""

import json

import numpy as np
import pytest

from sdlib.__main__ import main
from sdlib.mini import challenge, shapes
from sdlib.mini.challenge import Entry, Result


@pytest.fixture(scope="module")
def judge():
    from sdlib.mini.judge import ShapesJudge

    return ShapesJudge.from_pretrained()


def drawn(prompts):
    """(N, 64, 64, 3) uint8: each prompt's shape drawn exactly, as the training data is."""
    return np.stack([shapes.render(shapes.parse_caption(prompt)) for prompt in prompts])


def result(name, correct, seconds):
    return Result(entry=Entry(name=name), correct=correct, total=8, seconds=seconds,
                  first_call_s=5.0, right=[True] * correct + [False] * (8 - correct),
                  preset="mini-shapes", machine="a CPU", sdlib_version="0", date="2026-12-02")


def test_eight_fixed_prompts_of_pairs_the_model_saw_each_with_its_seed():
    assert len(challenge.PROMPTS) == len(challenge.SEEDS) == 8
    assert challenge.PROMPTS == tuple(shapes.canonical_prompts(8, seed=2026, held_out=False))
    assert not any(shapes.is_held_out(shapes.parse_caption(p)) for p in challenge.PROMPTS)
    assert len(set(challenge.SEEDS)) == 8


@pytest.mark.parametrize("settings, message", [
    ({"sampler": "plms"}, "choose one of ddim, euler, dpmpp_2m, lcm"),
    ({"num_steps": 0}, "num_steps"),
    ({"guidance_scale": -1.0}, "guidance"),
    ({"dtype": "float64"}, "not a policy sdlib supports"),
    ({"dtype": "auto"}, "hides the choice"),
])
def test_bad_settings_are_refused_with_what_to_choose(settings, message):
    with pytest.raises(ValueError, match=message):
        Entry(**settings)


def test_a_picture_is_right_only_when_every_attribute_matches(judge):
    images = drawn(challenge.PROMPTS)
    assert challenge.judged_right(judge, images) == [True] * 8
    swapped = images.copy()
    swapped[[0, 1]] = images[[1, 0]]  # two prompts' pictures exchanged
    right = challenge.judged_right(judge, swapped)
    assert right[2:] == [True] * 6 and right[:2] == [False, False]


def test_more_correct_pictures_beat_faster_ones_and_time_breaks_ties():
    entries = [result("a", 8, 2.0), result("b", 7, 0.1), result("c", 8, 1.0)]
    assert [r.entry.name for r in challenge.ranked(entries)] == ["c", "a", "b"]
    table = challenge.leaderboard(entries).splitlines()
    assert table[2].startswith("| 1 | c | 8/8 | 1.00 |")
    assert table[4].startswith("| 3 | b | 7/8 | 0.10 |")


def test_a_report_round_trips_and_a_stranger_file_is_named(tmp_path):
    report = result("ada", 6, 0.5)
    one = tmp_path / "ada.json"
    one.write_text(json.dumps(report.as_dict()))
    lines = tmp_path / "room.jsonl"
    lines.write_text("".join(json.dumps(result(n, 5, 1.0).as_dict()) + "\n" for n in "xy"))
    read = challenge.read_reports([one, lines])
    assert read[0] == report and [r.entry.name for r in read[1:]] == ["x", "y"]
    stranger = tmp_path / "doctor.json"
    stranger.write_text(json.dumps({"checks": []}))
    with pytest.raises(ValueError, match="not a challenge report: it lacks correct"):
        challenge.read_reports([stranger])


def test_play_times_warm_calls_and_judges_the_last_pictures(judge):
    entry = Entry(name="ci", num_steps=2, jit_compile=False)
    played = challenge.play(entry, preset="tiny", judge=judge, repeats=2)
    assert played.total == 8 and played.correct == sum(played.right) and len(played.right) == 8
    assert 0 < played.seconds < played.first_call_s  # the first call builds the pipeline too
    assert played.preset == "tiny" and played.entry == entry
    assert played.images.shape == (8, 64, 64, 3) and "images" not in played.as_dict()
    line = played.line()
    assert line.startswith(f"challenge | ci | {played.correct}/8 correct | ")
    assert "ddim 2 steps, guidance 7.5, float32, no XLA | tiny on " in line


def test_the_command_line_plays_and_ranks_the_collected_reports(tmp_path, capsys):
    assert main(["challenge", "--preset", "tiny", "--steps", "2", "--no-jit", "--name", "ci",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["entry"]["name"] == "ci" and report["entry"]["jit_compile"] is False
    (tmp_path / "ci.json").write_text(json.dumps(report))
    (tmp_path / "ada.json").write_text(json.dumps(result("ada", 8, 9.0).as_dict()))
    assert main(["challenge", "--leaderboard", str(tmp_path / "ci.json"),
                 str(tmp_path / "ada.json")]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[2].startswith("| 1 | ada | 8/8 |")  # tiny's random pictures are not all right
    assert main(["challenge", "--steps", "0"]) == 2
    assert "num_steps" in capsys.readouterr().err
