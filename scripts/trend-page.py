"""The trend charts of a JSON report on one page, for a screenshot in headless Chromium:

    python scripts/trend-page.py REPORT.json PAGE.html
    chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
        --window-size=1280,1500 --screenshot=PAGE.png file://$PWD/PAGE.html

The same chart block (``report.trend.trend_html``) the HTML report shows per result, for runs
whose session wrote only a JSON report (a GPU call returns few files).
"""

from __future__ import annotations

import html
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_omni_perf.report.trend import trend_html  # noqa: E402


def main(report: Path, page: Path) -> None:
    data = json.loads(report.read_text(encoding="utf-8"))
    blocks = [f"<h2>{html.escape(r['nodeid'])}</h2>{trend_html(r)}" for r in data["results"]]
    page.write_text("<!doctype html><meta charset=utf-8><title>trends</title>"
                    "<style>body{font:14px sans-serif;margin:16px}h2{font-size:15px}"
                    ".neutral{color:#555}</style>"
                    f"<h1>History of {html.escape(str(report))}</h1>" + "".join(blocks),
                    encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
