"""``cellmaps evaluate --report``: one self-contained HTML file whose numbers are the JSON's,
whose images are embedded PNGs, whose overlays put the worst image first and draw found,
extra and missed objects in their colours."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cellmaps.cli import main
from cellmaps.metrics.report import COLOURS


class Page(HTMLParser):
    """The page's images, table cells and every resource it points at."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[tuple[str, str]] = []  # (alt, src)
        self.cells: list[str] = []
        self.links: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append((a.get("alt", ""), a["src"]))
        for key in ("href", "src"):
            if key in a and tag != "img":
                self.links.append(a[key])
        if tag in ("script", "link", "iframe"):
            self.links.append(tag)
        self._in_cell = tag in ("td", "th")

    def handle_endtag(self, tag):
        self._in_cell = False

    def handle_data(self, data):
        if self._in_cell:
            self.cells.append(data)


def decode_png(src: str) -> np.ndarray:
    assert src.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))))


PURPLE = (100, 50, 150)


def write_evaluation_report(tmp_path) -> tuple[Path, dict]:
    """``cellmaps evaluate --report`` on two images: "good" (both found) and "bad" (one
    found, one extra, one missed); the report's path and the JSON result."""
    truth, pred = tmp_path / "t", tmp_path / "p"
    for root in (truth, pred):
        (root / "points").mkdir(parents=True)
    (truth / "images").mkdir()
    image = np.zeros((80, 80, 3), np.uint8)  # black, PURPLE and white bands: the overlays'
    image[27:54], image[54:] = PURPLE, 255  # display stretch keeps the purple as it is
    for i in ("good", "bad"):
        Image.fromarray(image).save(truth / "images" / f"{i}.png")
    # good: both found; bad: one found, one extra, one missed
    (truth / "points" / "good.csv").write_text("x,y,label\n20,20,n\n60,60,n\n")
    (pred / "points" / "good.csv").write_text("x,y,label,score\n21,20,n,0.9\n60,61,n,0.8\n")
    (truth / "points" / "bad.csv").write_text("x,y,label\n20,20,n\n60,60,n\n")
    (pred / "points" / "bad.csv").write_text("x,y,label,score\n20,22,n,0.9\n40,10,n,0.7\n")
    out, report = tmp_path / "r.json", tmp_path / "report.html"
    argv = ["evaluate", "--truth", str(truth), "--pred", str(pred), "--json", str(out),
            "--report", str(report), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(out.read_text())
    return report, result


def test_report_embeds_everything_and_its_numbers_are_the_json(tmp_path, capsys):
    report, result = write_evaluation_report(tmp_path)
    assert "wrote" in capsys.readouterr().out
    page = Page()
    page.feed(report.read_text(encoding="utf-8"))
    assert page.links == []  # self-contained: no link, script or external resource
    s = result["summary"]
    assert (s["tp"], s["fp"], s["fn"]) == (3, 1, 1)
    for value in (s["precision"], s["recall"], s["f1"]):
        assert f"{value:.4f}" in page.cells
    # per-image table worst first: bad (F1 0.5) before good (1.0)
    assert page.cells.index("bad") < page.cells.index("good")
    overlays = [(alt, decode_png(src)) for alt, src in page.images if alt in ("bad", "good")]
    assert [alt for alt, _ in overlays] == ["bad", "good"]
    bad = overlays[0][1][..., :3].reshape(-1, 3)
    colours = {tuple(c) for c in bad}
    assert {COLOURS["tp"], COLOURS["fp"], COLOURS["fn"]} <= colours  # all three drawn
    good = {tuple(c) for c in overlays[1][1][..., :3].reshape(-1, 3)}
    assert COLOURS["tp"] in good and COLOURS["fp"] not in good and COLOURS["fn"] not in good
    figure = [src for alt, src in page.images if alt == "evaluation figure"]
    assert len(figure) == 1 and decode_png(figure[0]).shape[0] > 100


def test_predict_report_lists_counts_and_thumbnails_of_the_run(tmp_path, capsys, monkeypatch):
    from tests.test_slides import blob_image, pointwise_model

    folder = tmp_path / "images"
    folder.mkdir()
    for name, n in (("few", 5), ("many", 40)):
        Image.fromarray(blob_image((120, 120), n=n, seed=3)).save(folder / f"{name}.png")
    model = tmp_path / "m.safetensors"
    pointwise_model("micronet").save(model)
    monkeypatch.setattr("cellmaps.model.Model.load", lambda path: pointwise_model("micronet"))
    out = tmp_path / "out"
    assert main(["predict", str(model), str(folder), "--out", str(out), "--report", "--quiet"]) == 0
    page = Page()
    page.feed((out / "report.html").read_text(encoding="utf-8"))
    assert page.links == []
    import csv

    with open(out / "counts.csv", newline="") as fh:
        counts = {r["id"]: r["count"] for r in csv.DictReader(fh)}
    assert int(counts["many"]) > int(counts["few"]) > 0
    for image_id, count in counts.items():  # each row of the table is the CSV's
        k = page.cells.index(image_id)
        assert page.cells[k + 1] == count
    thumbs = {alt: decode_png(src) for alt, src in page.images}
    assert set(thumbs) == {"few", "many"}
    assert max(thumbs["many"].shape[:2]) <= 256
    overlay = np.asarray(Image.open(out / "overlays" / "many.png").convert("RGB"))
    assert thumbs["many"].shape[:2] == overlay.shape[:2]  # 120 px: not shrunk
    np.testing.assert_array_equal(thumbs["many"][..., :3], overlay)
    # a second run with --overwrite replaces the report (it is the run's own file)
    assert main(["predict", str(model), str(folder), "--out", str(out), "--overwrite",
                 "--quiet"]) == 0  # fmt: skip
    assert not (out / "report.html").exists()


def test_prediction_report_shows_the_ki67_index_of_each_image_and_pooled(tmp_path):
    from cellmaps.outputs import prediction_report_html

    (tmp_path / "counts.csv").write_text("id,count,negative,positive\na,4,3,1\nb,2,1,1\n")
    (tmp_path / "ki67.csv").write_text(
        "id,positive,negative,index\na,1,3,0.2500\nb,1,1,0.5000\npooled,2,4,0.3333\n"
    )
    page = Page()
    page.feed(prediction_report_html(tmp_path))
    assert page.cells[page.cells.index("a") + 4] == "0.2500"
    assert page.cells[page.cells.index("b") + 4] == "0.5000"
    assert page.images == []  # no overlays/ folder: no thumbnails, no broken image
    assert "Pooled Ki67 index 0.3333 (2 positive, 4 negative" in prediction_report_html(tmp_path)


def browser() -> str:
    """A headless Chromium (Debian's ``chromium``); skip without one, or fail when
    CELLMAPS_REQUIRE_BROWSER=1 (set by .ci/run once it installed it)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    msg = "no Chromium to open the report in (apt-get install chromium)"
    if os.environ.get("CELLMAPS_REQUIRE_BROWSER") == "1":
        pytest.fail(msg + "; CELLMAPS_REQUIRE_BROWSER=1 requires one")
    pytest.skip(msg)


def test_report_renders_in_a_headless_browser(tmp_path):
    """Chromium draws the report: its screenshot holds the overlays' pixels (their image's
    purple band and at least as many found / extra / missed pixels as the embedded PNGs)."""
    report, _ = write_evaluation_report(tmp_path)
    page = Page()
    page.feed(report.read_text(encoding="utf-8"))
    overlays = [decode_png(src)[..., :3] for alt, src in page.images if alt in ("bad", "good")]
    shot = tmp_path / "shot.png"
    subprocess.run([browser(), "--headless", "--no-sandbox", "--disable-gpu",
                    "--hide-scrollbars", "--force-device-scale-factor=1",
                    "--window-size=1280,4000", f"--screenshot={shot}", report.as_uri()],
                   check=True, capture_output=True, timeout=180,
                   env={**os.environ, "HOME": str(tmp_path)})  # fmt: skip
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)

    def count(img: np.ndarray, colour) -> int:
        return int(np.all(img.reshape(-1, 3) == colour, axis=1).sum())

    behind = sum(count(o, PURPLE) for o in overlays)  # the images' band behind the rings
    assert behind > 3_000 and count(pixels, PURPLE) >= behind  # both images drawn
    for colour in COLOURS.values():
        drawn = sum(count(o, colour) for o in overlays)
        assert drawn > 0 and count(pixels, colour) >= drawn
