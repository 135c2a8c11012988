"""The run folder's CSV logs: every value under its own column when metrics appear later in a run
(OGPO's td_loss_success once the success windows fill), and a resumed run able to rewrite files
that an earlier version wrote with rows wider than their header."""

import csv

from steergym.algorithms.run_files import append_csv, keep_csv_rows


def read(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_metric_that_appears_later_widens_the_header_and_keeps_columns_aligned(tmp_path):
    path = tmp_path / "progress.csv"
    append_csv(path, {"step": 1, "loss": 0.5})
    append_csv(path, {"step": 2, "loss": 0.4, "td_loss_success": 9.0})
    append_csv(path, {"step": 3, "td_loss_success": 8.0, "loss": 0.3})  # another key order
    append_csv(path, {"step": 4, "loss": 0.2})  # the new metric absent again
    rows = read(path)
    assert list(rows[0]) == ["step", "loss", "td_loss_success"]
    assert [(r["step"], r["loss"], r["td_loss_success"]) for r in rows] == [
        ("1", "0.5", ""), ("2", "0.4", "9.0"), ("3", "0.3", "8.0"), ("4", "0.2", "")]
    assert not any(None in r for r in rows)


def test_keep_csv_rows_rewrites_a_file_whose_rows_are_wider_than_its_header(tmp_path):
    # what earlier versions wrote: header of the first row, later rows with one value more
    path = tmp_path / "progress.csv"
    path.write_text("env_steps,loss\n100,0.5\n200,0.4,9.0\n300,0.3,8.0\n")
    keep_csv_rows(path, lambda row: int(row["env_steps"]) <= 200)  # a resume from the checkpoint at 200
    rows = read(path)
    assert [(r["env_steps"], r["loss"], r["unnamed_3"]) for r in rows] == [("100", "0.5", ""), ("200", "0.4", "9.0")]
    append_csv(path, {"env_steps": 300, "loss": 0.3, "td_loss_success": 7.0})  # the resumed run goes on
    last = read(path)[-1]
    assert (last["env_steps"], last["loss"], last["unnamed_3"], last["td_loss_success"]) == ("300", "0.3", "", "7.0")


def test_keep_csv_rows_leaves_a_file_alone_when_every_row_is_kept_and_removes_it_when_none(tmp_path):
    path = tmp_path / "eval.csv"
    append_csv(path, {"env_steps": 100, "success_rate": 0.1})
    before = path.read_text()
    keep_csv_rows(path, lambda row: True)
    assert path.read_text() == before
    keep_csv_rows(path, lambda row: False)
    assert not path.exists()
    keep_csv_rows(path, lambda row: False)  # a missing file stays missing
    assert not path.exists()
