"""Files that are not UTF-8 (Latin-1 text, binary data) give the usual one-line error and exit 2, never a
UnicodeDecodeError traceback; valid files read exactly as before."""

import gzip
import json
import re
import subprocess
import sys

import pytest
from conftest import one_line_error as assert_one_line_error

from aloekit.errors import UserError
from aloekit.eval.tasks import TASKS
from aloekit.io import read_text_utf8

ALOEKIT = [sys.executable, "-m", "aloekit.cli"]

LATIN1 = "Caf\xe9 au lait spots are a sign of which disorder?".encode("latin-1")
# a PNG header: NUL bytes and an invalid UTF-8 start byte, as a wrong download would have
BINARY = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))


def run(*args):
    return subprocess.run([*ALOEKIT, *args], capture_output=True, text=True, timeout=300)




def _medmcqa(text: bytes) -> bytes:
    good = {"question": "Which vitamin?", "opa": "A", "opb": "B", "opc": "C", "opd": "D", "cop": 1}
    return json.dumps(good).encode() + b"\n" + b'{"question": "' + text + b'", "opa": "a"}\n'


def _mmlu(text: bytes) -> bytes:
    return b"Which vitamin?,A,B,C,D,A\n" + text + b",a,b,c,d,B\n"


# (task, file under the data dir, the file's content around the bad text): JSON Lines and CSV
EVAL_FILES = [("medmcqa", "medmcqa_dev/dev.json", _medmcqa),
              ("mmlu_anatomy", "mmlu_medical/test/anatomy_test.csv", _mmlu)]


@pytest.mark.parametrize("task,rel,make", EVAL_FILES, ids=[t for t, _, _ in EVAL_FILES])
def test_eval_latin1_and_binary_files_are_one_line(tmp_path, task, rel, make):
    path = tmp_path / rel
    path.parent.mkdir(parents=True)
    path.write_bytes(make(LATIN1))
    r = run("eval", "--tasks", task, "--data-dir", str(tmp_path), "--limit", "2", "-o", str(tmp_path / "out"))
    assert_one_line_error(r, str(path), "not UTF-8 text", "line 2", "iconv")
    path.write_bytes(BINARY)
    r = run("eval", "--tasks", task, "--data-dir", str(tmp_path), "--limit", "2", "-o", str(tmp_path / "out"))
    assert_one_line_error(r, str(path), "binary data, not UTF-8 text", "byte 0: 0x89")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("task,rel", [("headqa", "headqa_en/test_HEAD_EN.json"),
                                      ("pubmedqa", "pubmedqa_pqal/ori_pqal.json"),
                                      ("crows_pairs", "crows_pairs/crows_pairs_anonymized.csv"),
                                      ("bbq", "bbq/data/Age.jsonl")])
def test_other_eval_loaders_raise_user_error(tmp_path, task, rel):
    path = tmp_path / rel
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"x": "' + LATIN1 + b'"}\n')
    if task == "pubmedqa":
        (path.parent / "test_ground_truth.json").write_text("{}")
    with pytest.raises(UserError, match=re.escape(f"{path}: not UTF-8 text")):
        TASKS[task].load(tmp_path, True, None)  # even with --skip-bad-rows: a wrong encoding is not one bad row


def test_redteam_request_file_is_one_line(tmp_path):
    csv_path = tmp_path / "harmful_behaviors.csv"
    cfg = tmp_path / "rt.yaml"
    cfg.write_text(f"sources:\n  - {{name: advbench, path: {csv_path}}}\nattacks: [direct]\n"
                   f"output: {tmp_path / 'out'}\n")
    csv_path.write_bytes(b"goal,target\n" + LATIN1 + b",Sure\n")
    assert_one_line_error(run("redteam", str(cfg)), str(csv_path), "not UTF-8 text", "line 2")
    csv_path.write_bytes(BINARY)
    assert_one_line_error(run("redteam", str(cfg)), str(csv_path), "binary data")


def test_data_build_source_file_is_one_line(tmp_path):
    src = tmp_path / "mine.jsonl.gz"  # gzipped sources are decoded after decompressing
    cfg = tmp_path / "d.yaml"
    cfg.write_text(f"output: {tmp_path / 'out'}\nsources:\n  - name: mine\n    path: {src}\n    kind: qa\n"
                   "    fields: {question: q, answer: a}\n")
    src.write_bytes(gzip.compress(b'{"q": "ok?", "a": "yes"}\n{"q": "' + LATIN1 + b'", "a": "x"}\n'))
    assert_one_line_error(run("data", "build", str(cfg)), "source 'mine'", str(src), "not UTF-8 text", "line 2")


def test_read_text_utf8_reads_valid_files_like_open(tmp_path):
    p = tmp_path / "t.txt"
    raw = "\ufeffcaf\u00e9 \u2028 x\r\ny\rz\n\u00e9".encode()
    p.write_bytes(raw)
    for encoding in ("utf-8", "utf-8-sig"):
        for newline in (None, ""):
            with open(p, encoding=encoding, newline=newline) as f:
                assert read_text_utf8(p, encoding, newline) == f.read()


def test_utf16_names_the_encoding(tmp_path):
    p = tmp_path / "q.json"
    p.write_bytes('{"q": "hi"}'.encode("utf-16"))
    with pytest.raises(UserError, match=r"q.json: UTF-16 text, not UTF-8; .*iconv -f utf-16"):
        read_text_utf8(p)
