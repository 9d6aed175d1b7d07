"""CSV exports neutralise what a spreadsheet would run (studio.spreadsheets): the helpers, the analytics tables'
download and the batch manifest, whose names are the uploaded files' own."""

from __future__ import annotations

import csv
import io
import zipfile

import pandas as pd
import pytest

from studio.batches.results import Batch, BatchItem, batch_zip
from studio.db.tables import Asset, AssetKind, Job, JobStatus
from studio.media.storage import AssetStore
from studio.spreadsheets import FORMULA_PREFIXES, csv_text, frame_csv, neutralise
from tests.support import png_bytes

FORMULAS = ['=HYPERLINK("https://evil.example","x")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]


@pytest.mark.parametrize("formula", FORMULAS)
def test_text_a_spreadsheet_would_read_as_a_formula_starts_with_a_quote(formula):
    assert formula.startswith(FORMULA_PREFIXES)
    assert neutralise(formula) == "'" + formula


@pytest.mark.parametrize("value", ["plain name.png", "a=b", "", -5, 2.5, None, "'quoted"])
def test_everything_else_is_left_as_it_is(value):
    assert neutralise(value) == value


def read(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_csv_text_neutralises_the_header_and_every_row():
    text = csv_text(["name", "=cmd"], [["=1+1", 3], ["ok", -4]])
    assert read(text) == [["name", "'=cmd"], ["'=1+1", "3"], ["ok", "-4"]]


def test_a_table_download_neutralises_text_and_keeps_numbers():
    frame = pd.DataFrame({"user": ["=HYPERLINK(1)", "mia"], "credits": [-5, 12], "share": [0.5, None]})
    assert read(frame_csv(frame)) == [["user", "credits", "share"], ["'=HYPERLINK(1)", "-5", "0.5"], ["mia", "12", ""]]


def test_the_batch_manifest_keeps_hostile_file_names_as_text_and_unpacks_safely(tmp_path):
    store = AssetStore(tmp_path)
    result_sha = store.put(png_bytes())
    names = ['=HYPERLINK("https://evil.example").png', "..\\..\\evil.png", "@cmd.png"]
    items = []
    for i, name in enumerate(names, start=1):
        source = Asset(id=10 + i, user_id=1, kind=AssetKind.source, sha256="0" * 64, width=1, height=1, size_bytes=1)
        source.original_name = name
        result = Asset(id=20 + i, user_id=1, kind=AssetKind.result, sha256=result_sha, width=1, height=1, size_bytes=1)
        job = Job(id=i, user_id=1, model="preview", status=JobStatus.complete, cost=1, params={}, recipe={"seed": i})
        items.append(BatchItem(job=job, source=source, result=result))
    archive = zipfile.ZipFile(io.BytesIO(batch_zip(Batch(id="b", items=items), store)))
    manifest = read(archive.read("manifest.csv").decode())
    assert [row[0] for row in manifest[1:]] == ["'" + names[0], names[1], "'" + names[2]]
    # Result files: the source's name after its last '/', letters, digits, '.', '_', '-' and spaces only.
    assert [row[1] for row in manifest[1:]] == [
        "evil.example__-img2img.png",
        "_.._evil-img2img.png",
        "_cmd-img2img.png",
    ]
    assert not any("/" in name or "\\" in name or name.startswith(".") for name in archive.namelist())
