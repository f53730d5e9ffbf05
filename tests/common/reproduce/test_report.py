"""results.md and results.csv from finished cells: the chosen states' validation figures.

Pure functions of the cells' JSON, so these tests build cells by hand (no training)."""

from __future__ import annotations

import csv
import io

from common.reproduce.report import chosen_states, results_csv, results_markdown

FIGURES = {"map": 0.5, "precision_at_k": 0.25, "precision_within_radius": 0.125,
           "recall_within_radius": 0.0625}


def _cell(validation_map, epoch, selected_on="validation"):
    return {"figures": {"exact": FIGURES, "legacy": FIGURES}, "settings": {"ties": "index"},
            "wall_seconds": 1.0, "checkpoint": "best_map", "state_epoch": epoch,
            "selected_on": selected_on, "size": {"trainable_weights": 10, "multiply_adds": 20},
            "validation_figures": ({"map": validation_map} if validation_map is not None
                                   else {}), "command": ["x"]}


CELLS = {("dcbh", 48, 0): _cell(0.40, 110), ("dcbh", 48, 1): _cell(0.44, 150),
         ("itq", 48, 0): _cell(None, None, "test"), ("itq", 48, 1): _cell(None, None, "test")}
SETTINGS = {"dataset": "folder", "train_images": 90, "test_images": 10, "num_classes": 5,
            "epochs": 150, "batch_size": 64, "shuffle": True, "width_multiplier": 0.25,
            "checkpoint": "best_map", "ties": "index", "top_k": 50, "radius": 2,
            "validation_fraction": 0.1, "validation_seed": 0}


def test_chosen_states_give_mean_sd_of_the_validation_map_and_every_epoch():
    table = chosen_states(CELLS, ["dcbh", "itq"], [48], [0, 1])
    # mean 0.42, sample sd sqrt(((0.02)^2 * 2) / 1) = 0.028284...
    assert "| DCBH | 0.4200 +- 0.0283 (epochs 110, 150) |" in table.splitlines()
    assert "ITQ" not in table  # a baseline chooses no state


def test_a_seed_without_a_validation_figure_is_left_out_and_a_row_without_any_shows_a_dash():
    cells = {**CELLS, ("dcbh", 48, 1): _cell(None, 150, "test"), ("ddch", 48, 0): _cell(None, 9)}
    table = chosen_states(cells, ["dcbh", "ddch"], [48], [0, 1])
    assert "| DCBH | 0.4000 (epoch 110) |" in table.splitlines()
    assert "| DDCH | - |" in table.splitlines()


def test_markdown_has_the_section_only_when_states_were_chosen_on_validation():
    text = results_markdown(CELLS, ["dcbh", "itq"], [48], [0, 1], SETTINGS, {}, [])
    assert "## The chosen states" in text and "0.4200 +- 0.0283 (epochs 110, 150)" in text
    on_test = results_markdown(CELLS, ["dcbh", "itq"], [48], [0, 1],
                               {**SETTINGS, "validation_fraction": 0.0}, {}, [])
    assert "## The chosen states" not in on_test


def test_csv_gives_the_validation_map_on_the_exact_rows_only():
    rows = list(csv.DictReader(io.StringIO(results_csv(CELLS, ["dcbh", "itq"], [48], [0, 1]))))
    got = {(r["method"], r["seed"], r["hamming"]): r["validation_map"] for r in rows}
    assert got == {("dcbh", "0", "exact"): "0.4", ("dcbh", "0", "legacy"): "",
                   ("dcbh", "1", "exact"): "0.44", ("dcbh", "1", "legacy"): "",
                   ("itq", "0", "exact"): "", ("itq", "0", "legacy"): "",
                   ("itq", "1", "exact"): "", ("itq", "1", "legacy"): ""}


def test_the_selection_is_worded_by_checkpoint():
    """best_map: chosen on the validation split (or the test split, said so); best_loss: the
    training loss; last: the last epoch; neither of those two "chosen on a validation split"."""
    from common.reproduce.report import selection_text

    text = {(c, f): selection_text({**SETTINGS, "checkpoint": c, "validation_fraction": f})
            for c in ("best_map", "best_loss", "last") for f in (0.1, 0.0)}
    assert text["best_map", 0.1].startswith(
        "state `best_map` (the highest mAP of the evaluated states) chosen on a **validation "
        "split** (0.1 of each identity's train images")
    assert "chosen **on the test split itself**" in text["best_map", 0.0]
    assert text["best_loss", 0.0] == ("state `best_loss`: the epoch of the lowest mean training "
                                      "loss (chosen on no retrieval figure), scored once on the "
                                      "test split")
    assert text["last", 0.0] == ("state `last`: the last epoch (chosen on no retrieval figure), "
                                 "scored once on the test split")
    assert text["last", 0.1].endswith("was held out of training, though it chooses nothing")
    for key in (("best_loss", 0.1), ("last", 0.1), ("best_loss", 0.0), ("last", 0.0)):
        assert "chosen on a" not in text[key] and "test split itself" not in text[key]


def test_states_not_chosen_on_validation_are_not_called_chosen():
    text = results_markdown(CELLS, ["dcbh", "itq"], [48], [0, 1],
                            {**SETTINGS, "checkpoint": "last"}, {}, [])
    assert "## The chosen states" not in text
    assert "## The tabulated states: validation mAP" in text
    assert "Each deep row's `last` state, not chosen on this figure" in text
