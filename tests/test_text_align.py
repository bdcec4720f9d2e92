"""Sub-word alignment on a hand-built pair of tokenizations of "redcube big"."""

import torch

from clip_td.lib.text_align import align_teacher_tokens, alignment_matrix


def test_alignment_matrix_hand_case():
    # student: [CLS] "red" "cube" "big" [SEP] pad; teacher: "redc" "ube" "big" "(unplaced)"
    student = torch.tensor([[[0, 0], [0, 3], [3, 7], [8, 11], [0, 0], [0, 0]]])
    teacher = torch.tensor([[[0, 4], [4, 7], [8, 11], [-1, -1]]])
    a = alignment_matrix(student, teacher)
    expected = torch.tensor([[[0, 0, 0, 0], [1, 0, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 1, 0], [0] * 4, [0] * 4]])
    torch.testing.assert_close(a, expected.float())


def test_align_teacher_tokens_averages_overlaps():
    student = torch.tensor([[[0, 0], [0, 3], [3, 7], [8, 11]]])
    teacher = torch.tensor([[[0, 4], [4, 7], [8, 11]]])
    feats = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]]])
    mask = torch.tensor([[True, True, False]])  # third teacher token masked out
    aligned, valid = align_teacher_tokens(feats, teacher, mask, student)
    torch.testing.assert_close(aligned, torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.5, 0.5], [0.0, 0.0]]]))
    assert valid.tolist() == [[False, True, True, False]]
