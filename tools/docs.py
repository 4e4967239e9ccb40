#!/usr/bin/env python
"""Build the docs site into docs/ from nbs/.

nbdev's own processing (`proc_nbs`: directives, `show_doc` API reference, hidden cells) prepares every notebook
in `_proc/`; then, where `quarto` is on PATH, `nbdev-docs` renders the site as usual. These machines cannot
install Quarto, so otherwise nbconvert renders each processed notebook to HTML inside one page template with a
sidebar listing every notebook and an index page from nbs/index.ipynb.
"""
import functools, html, json, os, re, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NBS, OUT, SRC = ROOT / "nbs", ROOT / "docs", ROOT / "_docsrc"

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · qdash</title>
<style>
body{{margin:0;font:15px/1.55 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#1d2330;display:flex}}
nav{{width:230px;min-height:100vh;background:#f4f6fa;border-right:1px solid #dde2ea;padding:18px 14px;box-sizing:border-box;flex:none}}
nav a{{display:block;padding:4px 8px;border-radius:5px;color:#1d2330;text-decoration:none}}
nav a.here{{background:#1d4ed8;color:#fff}} nav h1{{font-size:18px;margin:0 0 12px 8px}}
nav h2{{font-size:12px;text-transform:uppercase;letter-spacing:.05em;color:#6b7280;margin:14px 0 4px 8px}}
main{{max-width:960px;padding:24px 40px;overflow-x:auto;flex:1}}
pre{{background:#f6f8fa;padding:10px 12px;border-radius:6px;overflow-x:auto;font-size:13px}}
code{{font-family:ui-monospace,SFMono-Regular,Menlo,monospace}} table{{border-collapse:collapse}}
td,th{{border:1px solid #dde2ea;padding:3px 8px}} blockquote{{color:#4b5563;border-left:3px solid #dde2ea;margin-left:0;padding-left:12px}}
.jp-InputPrompt,.jp-OutputPrompt,.prompt{{display:none}} img{{max-width:100%}}
</style></head>
<body><nav><h1>Q⊗DASH</h1>{sidebar}</nav><main>{body}</main></body></html>
"""

GUIDE = "guide"   # the pages that teach using and operating qdash: right after the index, before the modules

def notebooks():
    "Notebooks in reading order: index first, then the guide, then by folder (the package's layers) and number."
    nbs = [p for p in NBS.rglob("*.ipynb") if not any(part.startswith(("_", ".")) for part in p.relative_to(NBS).parts)]
    def key(p):
        folder = p.relative_to(NBS).parent.as_posix()
        return (p.stem != "index", folder != GUIDE, folder, p.stem)
    return sorted(nbs, key=key)

def rel(p: Path) -> Path: return p.relative_to(NBS)

def title_of(nb_path: Path) -> str:
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    for c in nb["cells"]:
        if c["cell_type"] == "markdown":
            m = re.search(r"^#\s+(.+)$", "".join(c["source"]), re.M)
            if m: return m.group(1).strip()
    return nb_path.stem

def page_name(p: Path) -> str:
    return "index.html" if p.stem == "index" else "_".join(rel(p).with_suffix("").parts) + ".html"

def sidebar(nbs, here) -> str:
    "Links to every page, under a heading per subfolder (collect, model, hub, ...)."
    out, folder = [], ""
    for q in nbs:
        f = rel(q).parent.as_posix()
        if f != folder and f != ".": out.append(f"<h2>{html.escape(f)}/</h2>")
        folder = f
        out.append(f'<a href="{page_name(q)}"{" class=here" if q == here else ""}>{html.escape(title_of(q))}</a>')
    return "".join(out)

_re_attr = re.compile(r"\{(?:target|style|\.)[^{}\n]*\}")

def quarto_to_plain(nb):
    "Apply what Quarto would: frontmatter to a title, `#| echo: false` hides source, `#| include: false` drops."
    import nbformat
    cells = []
    for cell in nb.cells:
        cell.metadata.pop("execution", None)  # timing data nbformat's schema refuses
        src = cell.source
        if cell.cell_type == "raw" and src.lstrip().startswith("---"):
            import yaml
            meta = yaml.safe_load(src.strip().strip("-")) or {}
            head = f"# {meta.get('title', '')}\n\n" + (f"> {meta['description']}" if meta.get("description") else "")
            cells.append(nbformat.v4.new_markdown_cell(head)); continue
        opts = dict(re.findall(r"^#\|\s*([\w-]+):\s*(.*)$", src, re.M))
        if opts.get("include") == "false": continue
        if cell.cell_type == "code":
            cell.source = "\n".join(l for l in src.splitlines() if not l.startswith("#|")).strip()
            if not cell.source and not cell.get("outputs"): continue
            if opts.get("echo") == "false" or not cell.source: cell.metadata["tags"] = ["remove_input"]
            for out in cell.get("outputs", []):
                md = out.get("data", {}).get("text/markdown")
                if md: out["data"]["text/markdown"] = _re_attr.sub("", md)
        else: cell.source = _re_attr.sub("", src)
        cells.append(cell)
    nb.cells = cells
    return nb

@functools.cache
def _nbdev_pages() -> dict:
    "nbdev's links to API docs (`/hub/guard.html#read_keys`, Quarto's page names) -> this site's page names."
    from nbdev.config import nbpath2html
    return {"/" + nbpath2html(rel(p)).as_posix(): page_name(p) for p in notebooks()}

_re_link = re.compile(r"(\]\()([^)\s#]+)(#[^)\s]*)?\)")

def local_links(nb, p: Path):
    """Markdown links from notebook `p` to other notebooks, and nbdev's links to API docs, become links to this site's
    pages; images under nbs/ are copied beside the pages. A link is relative to the notebook's folder, or, as the README's are, to the repository's root."""
    def fix(m):
        target = m.group(2)
        if target in _nbdev_pages(): return f"{m.group(1)}{_nbdev_pages()[target]}{m.group(3) or ''})"
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("/"): return m.group(0)
        f = next((f for f in ((p.parent / target).resolve(), (ROOT / target).resolve()) if f.exists()), None)
        if f is None or NBS not in f.parents: return m.group(0)
        if f.suffix == ".ipynb": new = page_name(f)
        else:
            new = f.relative_to(NBS).as_posix()
            (OUT / new).parent.mkdir(parents=True, exist_ok=True); shutil.copy(f, OUT / new)
        return f"{m.group(1)}{new}{m.group(3) or ''})"
    for cell in nb.cells:
        if cell.cell_type == "markdown": cell.source = _re_link.sub(fix, cell.source)
        for out in cell.get("outputs", []):      # show_doc's signatures and docstrings
            md = out.get("data", {}).get("text/markdown")
            if md: out["data"]["text/markdown"] = _re_link.sub(fix, md)
    return nb

def build_with_nbconvert(processed: dict):
    from nbconvert import HTMLExporter
    import nbformat
    from nbconvert.preprocessors import TagRemovePreprocessor
    exp = HTMLExporter(template_name="basic")
    exp.register_preprocessor(TagRemovePreprocessor(remove_input_tags={"remove_input"}), enabled=True)
    exp.exclude_input_prompt = exp.exclude_output_prompt = True
    exp.exclude_input = False
    nbs = notebooks()
    for p in nbs:
        side = sidebar(nbs, p)
        nb = local_links(quarto_to_plain(nbformat.read(str(processed.get(p, p)), as_version=4)), p)
        body, _ = exp.from_notebook_node(nb)
        (OUT / page_name(p)).write_text(PAGE.format(title=html.escape(title_of(p)), sidebar=side, body=body), encoding="utf-8")
    print(f"docs: {len(nbs)} pages in {OUT.relative_to(ROOT)}/")

def _imports_plus_code(src: str) -> bool:
    "True for an example cell that imports *and* does other work: nbdev's show_doc pass would run it out of context."
    import ast
    try: tree = ast.parse("\n".join(l for l in src.splitlines() if not l.lstrip().startswith(("#|", "%", "!"))))
    except SyntaxError: return False
    has_import = any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(tree))
    return has_import and any(not isinstance(n, (ast.Import, ast.ImportFrom)) for n in tree.body)

def split_title_cell(nb):
    """The first markdown cell's text after its `# title` and `> description` lines, as a cell of its own.

    nbdev's frontmatter processor takes the first markdown cell as the page's title and description and drops the
    whole cell, so an introduction written under the title (the house anatomy, and the index's Quick start) never
    reached the site."""
    import nbformat
    for i, c in enumerate(nb.cells):
        if c.cell_type != "markdown": continue
        lines = c.source.splitlines()
        if not lines or not lines[0].startswith("# "): return nb
        j = 1
        while j < len(lines) and (not lines[j].strip() or lines[j].startswith(">")): j += 1
        rest = "\n".join(lines[j:]).strip()
        if rest:
            c.source = "\n".join(lines[:j]).rstrip()
            nb.cells.insert(i + 1, nbformat.v4.new_markdown_cell(rest))
        return nb
    return nb

def staged_notebooks() -> Path:
    """Copies of the notebooks for nbdev's processing, with `#| eval: false` on example cells that import and compute,
    and the title cell's introduction split from it (`split_title_cell`).

    nbdev's docs pass executes exported cells and every cell containing an import (so that `show_doc` can see
    the objects); an example cell that also computes would run without the cells before it and fail. Those
    cells only need showing: their checks run under nbdev-test."""
    import nbformat
    if SRC.exists(): shutil.rmtree(SRC)
    SRC.mkdir()
    for p in notebooks():
        nb = nbformat.read(str(p), as_version=4)
        for c in nb.cells:
            if c.cell_type == "code" and not re.search(r"^#\|\s*export", c.source, re.M) and _imports_plus_code(c.source):
                c.source = "#| eval: false\n" + c.source
        split_title_cell(nb)
        (SRC / rel(p)).parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(SRC / rel(p)))
    for extra in NBS.glob("*.yml"): shutil.copy(extra, SRC / extra.name)
    return SRC

def main():
    os.chdir(ROOT)
    if shutil.which("quarto"):
        sys.exit(subprocess.call(["nbdev-docs"]))
    import nbdev.doclinks
    from nbdev.serve import proc_nbs
    nbdev.doclinks._build_modidx()
    cache = proc_nbs(str(staged_notebooks()), n_workers=1)
    processed = {p: cache / rel(p) for p in notebooks() if (cache / rel(p)).exists()}
    OUT.mkdir(exist_ok=True)
    for old in OUT.glob("*.html"): old.unlink()
    build_with_nbconvert(processed)

if __name__ == "__main__": main()
