#!/usr/bin/env python
"""Write README.md from nbs/index.ipynb (nbdev-readme needs Quarto, which these machines cannot install).

`python tools/readme.py` writes it; `--check` exits 1 when README.md is stale. Cells flagged `#| hide` are
left out, `#|` directives are dropped, code cells become fenced Python with their text outputs below them.
"""
import json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def _src(cell): return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]

def render(nb_path: Path) -> str:
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    parts = ["<!-- Generated from nbs/index.ipynb by tools/readme.py: edit the notebook, not this file. -->"]
    for cell in nb["cells"]:
        lines = _src(cell).splitlines()
        directives = [l.strip() for l in lines if l.strip().startswith("#|")]
        if any(d.replace(" ", "") in ("#|hide", "#|exporti") for d in directives): continue
        body = "\n".join(l for l in lines if not l.strip().startswith("#|")).strip("\n")
        if cell["cell_type"] == "markdown": parts.append(body)
        elif cell["cell_type"] == "code" and body:
            parts.append(f"```python\n{body}\n```")
            for out in cell.get("outputs", []):
                text = out.get("text") or out.get("data", {}).get("text/plain")
                if text: parts.append("```\n" + ("".join(text) if isinstance(text, list) else text).rstrip() + "\n```")
    return "\n\n".join(parts).rstrip() + "\n"

def main(argv):
    text, dest = render(ROOT / "nbs" / "index.ipynb"), ROOT / "README.md"
    if "--check" in argv:
        if not dest.exists() or dest.read_text(encoding="utf-8") != text:
            print("README.md is stale: run `python tools/readme.py` (it is generated from nbs/index.ipynb)"); return 1
        return 0
    dest.write_text(text, encoding="utf-8"); return 0

if __name__ == "__main__": sys.exit(main(sys.argv[1:]))
