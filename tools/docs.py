"""Docs without Quarto: execute the notebooks for the docs pages, and write README.md from nbs/index.ipynb.

Notebooks are committed without outputs, and Quarto does not execute .ipynb files, so the docs build executes
them first: `exec` runs nbs/ into _exec/ (same layout, outputs filled in); nbdev then processes _exec/ as usual
(`nbdev-readme --path _exec`, `nbdev-docs --path _exec`), keeping the outputs of every cell it shows.

    python tools/docs.py exec [NAME ...]     # execute nbs/ (or only the named notebooks) into _exec/
    python tools/docs.py check [NAME ...]    # exec, then nbdev-process _exec/ into _proc/ and check the outputs
    python tools/docs.py readme [--check]    # README.md (+ index_files/) from nbs/index.ipynb, or check it

`readme` does what nbdev-readme does, without Quarto: execute index.ipynb, run nbdev's own processors
(front matter, hidden and exported cells, show_doc), then write GitHub markdown (Quarto's gfm writer is
replaced by a small one: markdown cells as they are, code in fences, stdout, tables, images as files).
Cells flagged `#| gpu` or `#| eval: false` are not executed.
"""
import argparse
import difflib
import json
import os
import re
import shutil
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NBS, EXEC = ROOT / "nbs", ROOT / "_exec"
# experiment notebooks train or read run folders: their pages show the code, not a run
EXPERIMENTS = re.compile(r"^(train|evaluate|bench|audit|generalize|compare|drift)\.ipynb$")
NO_EXEC_FLAGS = {"gpu"}  # nbdev tst_flags whose cells need hardware the docs build does not have
SKIP_TAG = "skip-execution"  # nbclient leaves cells with this tag alone
_DIRECTIVE = re.compile(r"^\s*#\s*\|\s*([\w-]+)\s*:?\s*(.*?)\s*$")


def directives(source: str) -> dict[str, str]:
    "The `#| key: value` lines at the top of a cell."
    res = {}
    for line in source.splitlines():
        if not line.strip(): continue
        m = _DIRECTIVE.match(line)
        if not m: break
        res[m[1]] = m[2]
    return res


def _no_exec(cell) -> bool:
    d = directives("".join(cell["source"]))
    return bool(NO_EXEC_FLAGS & d.keys()) or d.get("eval", "").lower() == "false"


def execute(src: Path, dst: Path, cwd: Path, timeout: int = 600) -> str | None:
    "Execute notebook `src` with its working directory `cwd`, write it to `dst`; the error text if a cell fails."
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    nb = nbformat.read(src, as_version=4)
    skipped = [c for c in nb.cells if c.cell_type == "code" and _no_exec(c)]
    for c in skipped: c.metadata.setdefault("tags", []).append(SKIP_TAG)
    err = None
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
    try: client.execute()
    except CellExecutionError as e: err = f"{src.relative_to(ROOT)}: {str(e)[-3000:]}"
    for c in skipped:
        c.metadata.tags.remove(SKIP_TAG)
        if not c.metadata.tags: del c.metadata["tags"]
    dst.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dst)
    return err


def _selected(rel: Path, names: list[str]) -> bool:
    if names: return any(n in (rel.name, rel.stem, str(rel)) or str(rel).startswith(n.rstrip("/") + "/") for n in names)
    return not EXPERIMENTS.match(rel.name)


def exec_all(names: list[str] | None = None, workers: int = 2) -> list[Path]:
    "Mirror nbs/ into _exec/, executing the selected notebooks (default: all but the experiment notebooks)."
    names = names or []
    shutil.rmtree(EXEC, ignore_errors=True)
    jobs = []
    for f in sorted(NBS.rglob("*")):
        rel = f.relative_to(NBS)
        if f.is_dir() or any(p.startswith((".", "_")) for p in rel.parts[:-1]) or rel.name.startswith("."): continue
        (EXEC / rel).parent.mkdir(parents=True, exist_ok=True)
        if f.suffix == ".ipynb" and _selected(rel, names): jobs.append((f, EXEC / rel, (EXEC / rel).parent))
        else: shutil.copy2(f, EXEC / rel)
    missing = [n for n in names if not any(_selected(j[0].relative_to(NBS), [n]) for j in jobs)]
    if missing: sys.exit(f"no such notebook under nbs/: {missing}")
    print(f"executing {len(jobs)} notebooks into {EXEC.relative_to(ROOT)}/ with {workers} workers")
    with ProcessPoolExecutor(workers) as pool:
        errors = [e for e in pool.map(execute, *zip(*jobs, strict=True)) if e]
    if errors: sys.exit("\n\n".join(["notebooks failed:", *errors]))
    return [j[1] for j in jobs]


def nbdev_process(src: Path, dst: Path):
    "Run nbdev's docs processors (the ones nbdev-docs and nbdev-readme use) on one notebook."
    from nbdev.processors import FilterDefaults
    from nbdev.serve_drv import exec_nb
    cwd = os.getcwd()
    os.chdir(ROOT)  # nbdev reads pyproject.toml from the working directory
    try: exec_nb(src, dst, FilterDefaults)
    finally: os.chdir(cwd)


# ----- markdown for GitHub -----
_STYLE = re.compile(r"<style[^>]*>.*?</style>\s*", re.S)
_MD_LINK = re.compile(r"(\]\()([^)\s]+)(\))")


def _doc_links(md: str) -> str:
    "Relative links to notebooks become links to the hosted docs, as nbdev's README filter does."
    from nbdev.config import get_config
    from nbdev.readme_filter import doc_link
    base = get_config(ROOT).doc_url
    return _MD_LINK.sub(lambda m: m[1] + doc_link(m[2], base) + m[3], md) if base else md


_ROW, _CELL = re.compile(r"<tr[^>]*>(.*?)</tr>", re.S), re.compile(r"<t[hd][^>]*>(.*?)</t[hd]>", re.S)


def _html_table(html: str) -> str | None:
    "A pipe table for a plain HTML table (pandas' DataFrame output), as Quarto's gfm writer makes; None otherwise."
    if html.count("<table") != 1 or re.search(r"colspan|rowspan", html): return None
    rows = [[re.sub(r"<[^>]+>", "", c).strip().replace("|", "\\|") for c in _CELL.findall(r)]
            for r in _ROW.findall(html)]
    if not rows or len({len(r) for r in rows}) != 1: return None
    return "\n".join("| " + " | ".join(r) + " |" for r in [rows[0], ["---"] * len(rows[0]), *rows[1:]])


def _fence(text: str, lang: str = "") -> str:
    return f"``` {lang}\n{text.rstrip()}\n```".replace("``` \n", "```\n")


def to_markdown(nb: dict, img_dir: Path, img_prefix: str) -> str:
    "GitHub markdown for a processed notebook; images are written to `img_dir`."
    import base64
    out = []
    for i, cell in enumerate(nb["cells"]):
        src = "".join(cell.get("source") or "")
        if cell["cell_type"] == "raw":
            import yaml
            fm = yaml.safe_load(src.strip().strip("-")) or {} if src.strip().startswith("---") else {}
            if fm.get("title"): out.append(f"# {fm['title']}")
            if fm.get("description"): out.append(f"> {fm['description']}")
            continue
        if cell["cell_type"] == "markdown":
            if src.strip(): out.append(_doc_links(src.strip()))
            continue
        d = directives(src)
        code = "\n".join(line for line in src.splitlines() if not _DIRECTIVE.match(line)).strip()
        if d.get("include") == "false" or (not code and not cell.get("outputs")): continue
        if d.get("echo") != "false" and code: out.append(_fence(code, "python"))
        if d.get("output") == "false": continue
        for j, o in enumerate(cell.get("outputs", [])):
            kind = o["output_type"]
            if kind == "stream":
                if o["name"] == "stdout": out.append(_fence("".join(o["text"])))
            elif kind == "error":
                raise ValueError(f"cell {i} raised {o['ename']}: {o['evalue']}")
            else:
                data = o.get("data", {})
                if "image/png" in data:
                    name = f"cell-{i}-output-{j + 1}.png"
                    img_dir.mkdir(parents=True, exist_ok=True)
                    (img_dir / name).write_bytes(base64.b64decode("".join(data["image/png"])))
                    out.append(f"![]({img_prefix}/{name})")
                elif "text/markdown" in data: out.append("".join(data["text/markdown"]).strip())
                elif "text/html" in data:
                    html = _STYLE.sub("", "".join(data["text/html"])).strip()
                    out.append(_html_table(html) or html)
                elif "text/plain" in data: out.append(_fence("".join(data["text/plain"])))
    return "\n\n".join(out) + "\n"


IMG_PREFIX = "index_files/figure-commonmark"  # where Quarto's gfm render of index.ipynb puts its figures


def build_readme(dest_root: Path) -> str:
    "Execute and process nbs/index.ipynb; write README.md's images under `dest_root`, return its text."
    with tempfile.TemporaryDirectory(prefix="aidetect-readme-") as tmp:
        executed, processed = Path(tmp) / "index.ipynb", Path(tmp) / "proc" / "index.ipynb"
        err = execute(NBS / "index.ipynb", executed, NBS)
        if err: sys.exit(err)
        processed.parent.mkdir()
        nbdev_process(executed, processed)
        img_dir = dest_root / IMG_PREFIX
        shutil.rmtree(img_dir, ignore_errors=True)
        return to_markdown(json.loads(processed.read_text()), img_dir, IMG_PREFIX)


def readme(check: bool = False):
    "Write README.md from nbs/index.ipynb, or (check) fail when README.md differs from what it would be."
    if not check:
        (ROOT / "README.md").write_text(build_readme(ROOT))
        return print("wrote README.md and", IMG_PREFIX)
    with tempfile.TemporaryDirectory() as tmp:
        new, old = build_readme(Path(tmp)), (ROOT / "README.md").read_text()
        pngs = sorted(p.name for p in (Path(tmp) / IMG_PREFIX).glob("*.png"))
    missing = [p for p in pngs if not (ROOT / IMG_PREFIX / p).exists()]
    if new != old or missing:
        diff = "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), "README.md", "index.ipynb"))
        sys.exit(f"README.md is not up to date with nbs/index.ipynb (run `make readme`):\n{diff[:4000]}"
                 + (f"\nmissing images: {missing}" if missing else ""))
    print("README.md is up to date with nbs/index.ipynb")


def check(names: list[str]):
    "Execute, process with nbdev as the docs build does, and report the outputs each page will show."
    from nbdev.serve import proc_nbs
    executed = exec_all(names)
    cwd = os.getcwd()
    os.chdir(ROOT)
    try: cache = proc_nbs(str(EXEC), file_re="|".join(re.escape(p.name) for p in executed) or None)
    finally: os.chdir(cwd)
    bad = []
    print(f"{'page (in _proc/)':40} {'code':>5} {'with output':>12} {'images':>7} {'tables':>7}")
    for p in executed:
        nb = json.loads((cache / p.relative_to(EXEC)).read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c.get("source") or "").strip()]
        outs = [o for c in code for o in c.get("outputs", [])]
        imgs = sum("image/png" in o.get("data", {}) for o in outs)
        tables = sum("<table" in "".join(o.get("data", {}).get("text/html", "")) for o in outs)
        shown = sum(bool(c.get("outputs")) for c in code)
        print(f"{str(p.relative_to(EXEC)):40} {len(code):5} {shown:12} {imgs:7} {tables:7}")
        if code and not shown: bad.append(str(p.relative_to(EXEC)))
    if bad: sys.exit(f"pages with code but no outputs after processing: {bad}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("exec", "check"):
        p = sub.add_parser(name)
        p.add_argument("names", nargs="*", help="notebooks (e.g. index tutorials/method.ipynb 02_data); default: all")
    sub.add_parser("readme").add_argument("--check", action="store_true", help="fail if README.md is out of date")
    a = ap.parse_args()
    if a.cmd == "exec": exec_all(a.names)
    elif a.cmd == "check": check(a.names)
    else: readme(a.check)
