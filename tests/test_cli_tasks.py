"""`clip-td data check`, `clip-td evaluate` and `clip-td split` end to end through the CLI."""

import json

from clip_td.app.cli import main
from test_loaders_data import write_snli_ve, write_vcr, write_vqa


def test_data_check_exit_codes(tmp_path, capsys):
    write_snli_ve(tmp_path)
    assert main(["data", "check", "snli_ve", "--root", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["splits"]["val"] == {"instances": 4, "images": 2}
    (tmp_path / "images" / "1.jpg").unlink()
    assert main(["data", "check", "snli_ve", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and err[0].startswith(f"{tmp_path / 'snli_ve_val.jsonl'}:1: ") and ":2: " in err[1]
    assert err[2] == f"2 problem(s) found in {tmp_path}"


def test_evaluate_vqa_and_errors(tmp_path, capsys):
    write_vqa(tmp_path)
    res = tmp_path / "r.json"
    res.write_text(json.dumps([{"question_id": q, "answer": a} for q, a in ((1, "red"), (2, "two"), (3, "no"))]))
    argv = ["evaluate", "vqa", "--questions", str(tmp_path / "v2_OpenEnded_mscoco_val_questions.json"),
            "--annotations", str(tmp_path / "v2_mscoco_val_annotations.json"), "--results", str(res)]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    # Current official master (a013f00): q2's GTs (two x5, 2 x3, 3 x2) disagree, so GTs and the
    # prediction are normalised: "two" -> "2", GTs 2 x8, 3 x2. Annotator i with "2" sees 7 other "2"
    # -> min(1, 7/3) = 1; with "3" sees 8 -> 1; so q2 = 1. q1 = 1, q3 = 0: overall (1 + 1 + 0) / 3.
    # Per type: the mean of the per-question accuracies of that type.
    assert out == {"overall": 66.67, "perQuestionType": {"what color is the": 100.0, "how many": 100.0, "is it": 0.0},
                   "perAnswerType": {"other": 100.0, "number": 100.0, "yes/no": 0.0}}
    # The pre-2021 tool (--rule legacy): GTs only punctuation-stripped, so "two" stays a word while the
    # prediction becomes "2": annotators with "two" (5) see three "2" -> 1, with "2" (3) see two
    # other "2" -> 2/3, with "3" (2) see three "2" -> 1: q2 = (5 + 2 + 2) / 10 = 0.9; overall 63.33.
    assert main(argv + ["--rule", "legacy"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["overall"] == 63.33 and out["perQuestionType"]["how many"] == 90.0
    assert main(argv + ["--rule", "bogus"]) == 2
    assert "bogus" in capsys.readouterr().err
    res.write_text(json.dumps([{"question_id": 1, "answer": "red"}]))
    assert main(argv) == 2
    assert "no answer for question_id 2" in capsys.readouterr().err


def test_evaluate_vcr_snli(tmp_path, capsys):
    write_vcr(tmp_path)
    pred = tmp_path / "p.jsonl"
    pred.write_text("".join(json.dumps({"annot_id": f"{m}-{k}", "answer": k % 4, "rationale": 0}) + "\n"
                            for k, m in enumerate(("m1", "m1", "m2", "m3"))))
    assert main(["evaluate", "vcr", "--annotations", str(tmp_path / "val.jsonl"), "--predictions", str(pred)]) == 0
    assert json.loads(capsys.readouterr().out) == {"q2a": 100.0, "qa2r": 25.0, "q2ar": 25.0}


def test_split_commands(tmp_path, capsys):
    write_vcr(tmp_path / "vcr", split="train")
    out = tmp_path / "out"
    assert main(["split", "lowshot", "--task", "vcr", "--root", str(tmp_path / "vcr"), "--fractions", "0.5", "1",
                 "--seeds", "0", "--out", str(out)]) == 0
    rec = json.loads((out / "lowshot_vcr_train_f0.5_s0.json").read_text())
    assert rec["counts"] == {"selected": 2, "total": 4, "labels": 2} and rec["fraction"] == 0.5 and rec["seed"] == 0
    assert rec["ids"] == [f"{m}-{k}" for k, m in enumerate(("m1", "m1", "m2", "m3")) if k in rec["indices"]]
    assert main(["split", "group-shift", "--root", str(tmp_path / "vcr"), "--holdout-fraction", "0.25", "--out", str(out)]) == 0
    rec = json.loads((out / "group_shift_vcr_train_movie_s0.json").read_text())
    assert rec["counts"]["train"] + rec["counts"]["test"] == 4 and rec["heldout_groups"]
    assert main(["split", "lowshot", "--task", "vcr", "--root", str(tmp_path / "vcr"), "--fractions", "1.5",
                 "--out", str(out)]) == 2
    assert "outside (0, 1]" in capsys.readouterr().err


def test_split_prior_shift_files_load(tmp_path, capsys):
    from tasks import get_task

    write_vqa(tmp_path / "vqa", split="train")
    a_path = tmp_path / "vqa" / "v2_mscoco_train_annotations.json"
    anns = json.loads(a_path.read_text())
    for a in anns["annotations"]:
        a["question_type"] = "what"  # one type with 3 answer groups, so both sides get some
    a_path.write_text(json.dumps(anns))
    out = tmp_path / "cp"
    assert main(["split", "prior-shift", "--root", str(tmp_path / "vqa"), "--splits", "train",
                 "--test-fraction", "0.3", "--out", str(out)]) == 0
    rec = json.loads((out / "prior_shift_cp_s0.json").read_text())
    assert rec["counts"] == {"train": 2, "test": 1}
    task = get_task("vqa", paths={"image_root": str(tmp_path / "vqa")})
    test = task.load(out, "cp_test")
    assert sorted(test["uid"]) == sorted(rec["test_ids"])
    assert test[0]["image"].endswith("images/train/COCO_train_%012d.jpg" % (1 if test[0]["question_id"] < 3 else 2))
