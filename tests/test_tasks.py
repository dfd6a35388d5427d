"""Task readers and metrics: exact values on inputs whose symmetry would hide a wrong formula; refusals."""

import json
import math

import pytest

from electra.tasks import TaskError, macro_f1, matthews, read_conll, read_table


def test_matthews_with_more_false_positives_than_false_negatives():
    """tp 2, fn 1, fp 3, tn 2: (2*2 - 3*1) / sqrt((2+3)(2+1)(2+3)(2+1)) = 1/15, as sklearn computes it."""
    gold = [1, 1, 1, 0, 0, 0, 0, 0]
    pred = [1, 1, 0, 1, 1, 1, 0, 0]
    assert matthews(pred, gold) == pytest.approx(1 / 15)
    assert matthews([1, 0, 0, 0], [1, 1, 1, 0]) == pytest.approx((1 * 1 - 0 * 2) / math.sqrt(1 * 3 * 1 * 3))


def test_macro_f1_counts_a_class_that_is_only_predicted():
    """A class the model predicts but the gold labels never hold scores F1 0 in the mean (as sklearn's
    macro average over the labels of both): class 0 1, class 1 2/3, class 2 0."""
    assert macro_f1([0, 1, 2], [0, 1, 1]) == pytest.approx((1 + 2 / 3 + 0) / 3)


def test_conll_lines_without_a_bio_tag_or_a_second_column_are_refused(tmp_path):
    (tmp_path / "a.txt").write_text("Ann PER\nran O\n")
    with pytest.raises(TaskError, match="a.txt:1: tag 'PER' is not BIO/IOB2"):
        read_conll(tmp_path / "a.txt")
    (tmp_path / "b.txt").write_text("Ann B-PER\nran\n")
    with pytest.raises(TaskError, match="b.txt:2 has one column; expected a token and a tag"):
        read_conll(tmp_path / "b.txt")


def test_a_list_of_labels_refuses_booleans(tmp_path):
    """true is no label name (str(True) would make a label "True")."""
    (tmp_path / "d.jsonl").write_text(json.dumps({"text": "a", "label": ["x", True]}) + "\n")
    with pytest.raises(TaskError, match="a list of labels holds strings or integers"):
        read_table(tmp_path / "d.jsonl", "text", None, "label", empty_label=True)
