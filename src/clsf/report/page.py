"""One report, two files: a self-contained HTML page (images embedded as data URIs, no network, opens
from disk) and report.md with its pictures in report_files/. Both are written from the same list of
blocks, so they never say different things.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import html
from pathlib import Path

from clsf.run.files import write_text
from clsf.errors import DiskFull, UserError

CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1180px;padding:0 16px;color:#1b1f24}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #d0d7de;padding-bottom:4px}h3{font-size:15px}
table{border-collapse:collapse;margin:8px 0 14px;display:block;max-width:100%;overflow-x:auto}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:right;max-width:24em;overflow-wrap:anywhere}
th{background:#f6f8fa;cursor:pointer;user-select:none}td:first-child,th:first-child{text-align:left}
pre{background:#f6f8fa;padding:10px;overflow:auto;font-size:12px}figure{margin:10px 0}figcaption{color:#57606a;font-size:12px}
img{max-width:100%}.verdict{font-size:16px;font-weight:600;padding:8px 12px;background:#ddf4ff;border-left:4px solid #0969da}"""

# click a column header to sort by it (numbers numerically; a second click reverses)
SORT_JS = """document.querySelectorAll('table.sortable th').forEach(function(th,col){th.addEventListener('click',function(){
var body=th.closest('table').tBodies[0],rows=Array.from(body.rows),asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';
function key(r){var t=r.cells[col].textContent.trim(),n=parseFloat(t);return isNaN(n)?t:n;}
rows.sort(function(a,b){var x=key(a),y=key(b);return (x>y?1:x<y?-1:0)*(asc?1:-1);});rows.forEach(function(r){body.appendChild(r);});});});"""




class Page:
    def __init__(self, title: str):
        self.title = title
        self.blocks: list[tuple] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("h", level, text))

    def text(self, text: str, css: str = "") -> None:
        self.blocks.append(("p", text, css))

    def table(self, header: list[str], rows: list[list], caption: str = "") -> None:
        self.blocks.append(("table", header, [["" if c is None else str(c) for c in r] for r in rows], caption))

    def image(self, name: str, png: bytes, caption: str = "") -> None:
        self.blocks.append(("img", name, png, caption))

    def pre(self, text: str) -> None:
        self.blocks.append(("pre", text))

    def to_html(self) -> str:
        e = html.escape
        out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
               '<meta name="viewport" content="width=device-width, initial-scale=1">',
               f"<title>{e(self.title)}</title><style>{CSS}</style></head><body>", f"<h1>{e(self.title)}</h1>"]
        for b in self.blocks:
            if b[0] == "h":
                out.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                out.append(f'<p class="{b[2]}">{e(b[1])}</p>' if b[2] else f"<p>{e(b[1])}</p>")
            elif b[0] == "table":
                _, header, rows, caption = b
                out.append('<table class="sortable">' + (f"<caption>{e(caption)}</caption>" if caption else ""))
                out.append("<thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr></thead><tbody>")
                out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows]
                out.append("</tbody></table>")
            elif b[0] == "img":
                _, name, png, caption = b
                data = base64.b64encode(png).decode("ascii")
                out.append(f'<figure><img src="data:image/png;base64,{data}" alt="{e(caption or name)}">'
                           + (f"<figcaption>{e(caption)}</figcaption>" if caption else "") + "</figure>")
            elif b[0] == "pre":
                out.append(f"<pre>{e(b[1])}</pre>")
        out.append(f"<script>{SORT_JS}</script></body></html>")
        return "\n".join(out) + "\n"

    def to_markdown(self, files: str) -> tuple[str, dict[str, bytes]]:
        """The markdown text and the pictures it links ({file name: png}) under `files`/."""
        text = lambda t: html.escape(str(t), quote=False)  # noqa: E731 - markdown renders raw HTML: names stay text
        out, pictures = [f"# {text(self.title)}", ""], {}
        for b in self.blocks:
            if b[0] == "h":
                out += ["#" * b[1] + " " + text(b[2]), ""]
            elif b[0] == "p":
                out += [f"**{text(b[1])}**" if b[2] else text(b[1]), ""]
            elif b[0] == "table":
                _, header, rows, caption = b
                cell = lambda c: text(c).replace("|", "\\|")  # noqa: E731
                out += ([f"*{text(caption)}*", ""] if caption else []) + ["| " + " | ".join(map(cell, header)) + " |",
                                                                   "|" + "|".join("---" for _ in header) + "|"]
                out += ["| " + " | ".join(map(cell, r)) + " |" for r in rows] + [""]
            elif b[0] == "img":
                _, name, png, caption = b
                pictures[f"{name}.png"] = png
                out += [f"![{text(caption or name)}]({files}/{name}.png)", ""] + ([f"*{text(caption)}*", ""] if caption else [])
            elif b[0] == "pre":
                out += ["```", b[1].rstrip("\n"), "```", ""]
        return "\n".join(out), pictures

    def write(self, folder: Path) -> Path:
        """folder/report.html, folder/report.md and folder/report_files/*.png; returns the HTML path."""
        folder = Path(folder)
        made = [p for p in (folder, folder / "report_files") if not p.exists()]  # removed again if the write fails
        written = []
        try:
            folder.mkdir(parents=True, exist_ok=True)
            text, pictures = self.to_markdown("report_files")
            if pictures:
                (folder / "report_files").mkdir(exist_ok=True)
            for name, png in pictures.items():
                tmp = folder / "report_files" / (name + ".part")
                try:
                    tmp.write_bytes(png)
                    tmp.replace(folder / "report_files" / name)
                    written.append(folder / "report_files" / name)
                finally:
                    tmp.unlink(missing_ok=True)
            write_text(folder / "report.md", text)
            write_text(folder / "report.html", self.to_html())
        except OSError as e:  # read-only, a file where the folder should be, a full disk: nothing left behind
            for p in written if (folder / "report_files") in made else []:
                p.unlink(missing_ok=True)
            for p in reversed(made):
                with contextlib.suppress(OSError):
                    p.rmdir()
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull(f"no space left on the device holding {folder}; free space and build the report again "
                               "(nothing was written).") from None
            raise UserError(f"cannot write the report into {folder} ({e.strerror or e}); choose another --out.") from None
        return folder / "report.html"
