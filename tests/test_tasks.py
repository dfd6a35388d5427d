"""Task readers and metrics: exact values on inputs whose symmetry would hide a wrong formula; refusals."""

import json
import math

import pytest

from electra.tasks import (
    Example,
    TaskError,
    entity_scores,
    label_list,
    macro_f1,
    matthews,
    pearson,
    read_conll,
    read_table,
    spearman,
)


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
    (tmp_path / "a.txt").write_text("Ann BPER\nran O\n")  # a B or I needs its hyphen
    with pytest.raises(TaskError, match="a.txt:1: tag 'BPER' is not BIO/IOB2"):
        read_conll(tmp_path / "a.txt")
    (tmp_path / "b.txt").write_text("Ann B-PER\nran\n")
    with pytest.raises(TaskError, match="b.txt:2 has one column; expected a token and a tag"):
        read_conll(tmp_path / "b.txt")


def test_a_list_of_labels_refuses_booleans(tmp_path):
    """true is no label name (str(True) would make a label "True")."""
    (tmp_path / "d.jsonl").write_text(json.dumps({"text": "a", "label": ["x", True]}) + "\n")
    with pytest.raises(TaskError, match="a list of labels holds strings or integers"):
        read_table(tmp_path / "d.jsonl", "text", None, "label", empty_label=True)


def test_spearman_ranks_both_sides_and_shares_ranks_between_ties_at_either_end():
    """Spearman is Pearson of the ranks: 1 for any increasing relation however curved (Pearson of
    the values is not), and tied values share their mean rank wherever they sort, first or last.
    x ranks (1, 2, 3.5, 3.5) against (1, 2, 3, 4): deviations (-1.5, -0.5, 1, 1) and (-1.5, -0.5,
    0.5, 1.5), so 4.5 / sqrt(4.5 * 5) = sqrt(0.9), as scipy.stats.spearmanr computes it."""
    assert spearman([1, 2, 3, 100], [5, 6, 7, 800]) == pytest.approx(1.0)
    assert pearson([1, 2, 3, 100], [5, 6, 7, 800]) < 0.9999
    assert spearman([1, 2, 3, 3], [1, 2, 3, 4]) == pytest.approx(math.sqrt(0.9))
    assert spearman([5, 5, 6, 7], [1, 2, 3, 4]) == pytest.approx(math.sqrt(0.9))
    assert spearman([1, 2, 3, 4], [7, 7, 7, 9]) == pytest.approx(math.sqrt(0.6))  # y ranks (2, 2, 2, 4)


def test_a_constant_prediction_correlates_zero():
    """Correlation with a constant is undefined; it is reported as 0, as an undefined Matthews
    correlation is (not NaN, which would not rank seeds)."""
    assert pearson([2, 2, 2], [1, 2, 3]) == 0.0 and spearman([2, 2, 2], [1, 2, 3]) == 0.0


def test_macro_f1_counts_a_class_that_is_only_in_the_gold_labels():
    """A gold class the model never predicts scores F1 0 in the mean: class 0 2*2/(3+2), class 1 0.
    Multi-label data in which no label occurs at all scores 0, as micro F1 does."""
    assert macro_f1([0, 0, 0], [0, 0, 1]) == pytest.approx((4 / 5 + 0) / 2)
    assert macro_f1([[0, 0]], [[0, 0]]) == 0.0


def test_entity_scores_count_every_type_together_not_the_mean_of_the_types():
    """Entity-level precision, recall and F1 as seqeval computes them: over the spans of all types
    at once. Gold PER(0,1), PER(2,4), PER(0,1), LOC(2,4); predicted those PERs, MISC(1,2) and
    LOC(2,3): 3 right of 5 predicted and 4 gold. The mean of the types' F1 would be (1 + 0 + 0) / 3."""
    gold = [["B-PER", "O", "B-PER", "I-PER"], ["B-PER", "O", "B-LOC", "I-LOC"]]
    pred = [["B-PER", "O", "B-PER", "I-PER"], ["B-PER", "B-MISC", "B-LOC", "O"]]
    s = entity_scores(pred, gold)
    assert s == {"f1": pytest.approx(2 / 3), "precision": pytest.approx(3 / 5), "recall": pytest.approx(3 / 4)}


def test_table_rows_of_only_spaces_are_skipped_and_labels_are_read_trimmed(tmp_path):
    (tmp_path / "d.tsv").write_text("sentence\tlabel\na film\t1\n   \t \n\nanother\t0\n")
    assert read_table(tmp_path / "d.tsv", "sentence", None, "label") == [
        Example("a film", None, "1"),
        Example("another", None, "0"),
    ]
    records = [{"text": "a", "label": " pos "}, {"text": "b", "label": [1.0, " x ", 2]}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert [e.label for e in read_table(tmp_path / "d.jsonl", "text", None, "label", empty_label=True)] == [
        "pos",
        ["1", "x", "2"],  # 1.0 is the label 1, as a JSON number label is
    ]


def test_a_glue_row_wider_than_its_header_is_read_by_its_columns_where_its_label_is_one(tmp_path):
    """GLUE's files are read by their known columns: a row with a field past the header's keeps its
    label; a row whose label column holds no label of the task is named (a tab inside the text)."""
    header = "index\tsentence1\tsentence2\tlabel\n"
    rte = {"fixed": "GLUE's RTE", "labels": ("entailment", "not_entailment")}
    (tmp_path / "dev.tsv").write_text(header + "0\ta\tb\tentailment\tnote\n")
    read = lambda: read_table(tmp_path / "dev.tsv", "sentence1", "sentence2", "label", **rte)  # noqa: E731
    assert read() == [Example("a", "b", "entailment")]
    (tmp_path / "dev.tsv").write_text(header + "0\ta\tb\tc\tentailment\n")
    with pytest.raises(TaskError, match="dev.tsv:2 has 5 columns, its header 4: a field holds a tab"):
        read()


def test_a_quoted_label_cell_reads_its_doubled_quotes_as_one():
    assert label_list('"say ""hi"",other"', ",", "row 1") == ['say "hi"', "other"]


def test_a_nan_prediction_makes_the_correlations_nan_not_a_rank():
    """A diverged model predicts NaN: Spearman is then NaN, as scipy.stats.spearmanr (and Pearson)
    give it, so such a seed ranks below every other; NaN has no place in an order of scores."""
    nan = float("nan")
    for pred in ([nan, nan, nan, nan], [1.0, nan, 3.0, 4.0]):
        assert math.isnan(spearman(pred, [1, 2, 3, 4])) and math.isnan(pearson(pred, [1, 2, 3, 4]))
    assert math.isnan(spearman([1, 2, 3, 4], [1, nan, 3, 4]))
