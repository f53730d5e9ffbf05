"""common.runs.history: the per-epoch history both the hashing loop and the GAN write."""

import json
import subprocess
import sys

from common.runs.history import HISTORY, append_history_line, read_history_lines


def test_append_then_read_round_trips_in_epoch_order(tmp_path):
    for epoch in (2, 1, 3):
        append_history_line(str(tmp_path), {"epoch": epoch, "loss": epoch / 10})
    lines = (tmp_path / HISTORY).read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [2, 1, 3]  # appended as given
    assert read_history_lines(str(tmp_path)) == [
        {"epoch": 1, "loss": 0.1}, {"epoch": 2, "loss": 0.2}, {"epoch": 3, "loss": 0.3}]


def test_a_missing_file_reads_as_no_epochs(tmp_path):
    assert read_history_lines(str(tmp_path)) == []
    assert read_history_lines(str(tmp_path / "no_such_run")) == []


def test_torn_and_foreign_lines_are_skipped_and_the_later_duplicate_wins(tmp_path):
    (tmp_path / HISTORY).write_text(
        '{"epoch": 1, "loss": 5.0}\n'
        '{"epoch": 2, "loss": 4.0}\n'
        '["not", "a", "record"]\n'
        '{"loss": 3.0}\n'                 # no epoch
        '{"epoch": "3", "loss": 3.0}\n'   # epoch not an integer
        '{"epoch": true, "loss": 3.0}\n'  # a bool is not an epoch
        '{"epoch": 2, "loss": 3.5}\n'     # re-recorded after a resume
        '\xff\xfe garbage\n'
        '{"epoch": 3, "lo', encoding="utf-8", errors="surrogateescape")  # torn by a kill
    assert read_history_lines(str(tmp_path)) == [{"epoch": 1, "loss": 5.0},
                                                 {"epoch": 2, "loss": 3.5}]


def test_another_file_name_is_kept_apart(tmp_path):
    append_history_line(str(tmp_path), {"epoch": 1}, name="other.jsonl")
    assert read_history_lines(str(tmp_path)) == []
    assert read_history_lines(str(tmp_path), name="other.jsonl") == [{"epoch": 1}]


def test_the_module_loads_without_tensorflow():
    code = ("import sys, common.runs.history, dfh_tf.gan.run_folder; "
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_training_loop_and_the_gan_read_through_it(tmp_path):
    from common.training.reporting import read_history as read_training_history
    from dfh_tf.gan.run_folder import HISTORY_FILE, read_history as read_gan_history

    assert HISTORY_FILE == HISTORY
    (tmp_path / HISTORY).write_text('{"epoch": 1}\n{"epo', encoding="utf-8")
    assert read_training_history(str(tmp_path)) == read_gan_history(str(tmp_path)) == [{"epoch": 1}]


def test_an_append_after_a_torn_line_starts_a_line_of_its_own(tmp_path):
    # A kill mid-write leaves '{"epoch": 3, "lo' without its newline; the resumed run's
    # line for epoch 3 must not be glued onto it (which would lose epoch 3 for good).
    (tmp_path / HISTORY).write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3, "lo',
                                    encoding="utf-8")
    append_history_line(str(tmp_path), {"epoch": 3, "loss": 0.5})
    append_history_line(str(tmp_path), {"epoch": 4, "loss": 0.4})
    assert (tmp_path / HISTORY).read_text().splitlines() == [
        '{"epoch": 1}', '{"epoch": 2}', '{"epoch": 3, "lo',
        '{"epoch": 3, "loss": 0.5}', '{"epoch": 4, "loss": 0.4}']
    assert [h["epoch"] for h in read_history_lines(str(tmp_path))] == [1, 2, 3, 4]
