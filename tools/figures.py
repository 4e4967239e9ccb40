#!/usr/bin/env python
"""Run notebooks and keep the figures they draw, so the docs site shows them (issue #16, item 10).

A notebook's examples are checked by `nbdev-test`, which keeps no output; the docs site renders what the notebook
holds. This runs each notebook as `nbdev-test` does (same flags: cells flagged `slow`, `influx`, ... are skipped
unless named), then writes back into the source notebook the image outputs of its cells — and nothing else: text
and tables stay out, so a diff shows only figures that changed. Run it after changing a notebook that plots:

    python tools/figures.py                      # every notebook that draws with matplotlib
    python tools/figures.py nbs/model/06a_trend.ipynb
"""
import argparse, json, re, shutil, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT / "nbs"
DRAWS = re.compile(r"^\s*(?:plt\.show\(\)|fig(?:ure)?\.(?:show|tight_layout)\(|.*\bplt\.subplots?\()", re.M)


def draws(nb_path: Path) -> bool:
    "Whether a code cell of the notebook draws with matplotlib."
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    return any(c["cell_type"] == "code" and DRAWS.search("".join(c["source"])) for c in nb["cells"])


def figures_only(outputs: list) -> list:
    "The image outputs of a cell (display_data / execute_result holding image/png or image/svg+xml), metadata dropped."
    keep = []
    for o in outputs:
        data = o.get("data") or {}
        img = {k: v for k, v in data.items() if k in ("image/png", "image/svg+xml")}
        if img: keep.append({"output_type": "display_data", "data": img, "metadata": {}})
    return keep


def run_and_keep(nb_path: Path, flags: list[str]) -> int:
    "Execute `nb_path` as nbdev-test does; copy its figures into the source notebook. The number of figures kept."
    from nbdev.test import test_nb
    src = json.loads(nb_path.read_text(encoding="utf-8"))
    with tempfile.NamedTemporaryFile("w", suffix=".ipynb", dir=nb_path.parent, delete=False) as f:
        tmp = Path(f.name)                      # beside the source: relative paths in the notebook still resolve
    try:
        shutil.copy(nb_path, tmp)
        from nbdev.config import get_config
        skip = [f for f in get_config().tst_flags.split() if f not in flags]
        ok, secs = test_nb(tmp, skip_flags=skip, save=True)
        if not ok: raise SystemExit(f"{nb_path}: a cell failed; nothing written (run nbdev-test on it for the error)")
        ran = json.loads(tmp.read_text(encoding="utf-8"))
    finally:
        tmp.unlink(missing_ok=True)
    done = {"".join(c["source"]): c.get("outputs", []) for c in ran["cells"] if c["cell_type"] == "code"}
    kept = 0
    for c in src["cells"]:
        if c["cell_type"] != "code": continue
        figs = figures_only(done.get("".join(c["source"]), []))
        c["outputs"], kept = figs, kept + len(figs)
    nb_path.write_text(json.dumps(src, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{nb_path.relative_to(ROOT)}: {kept} figure(s) kept ({secs:.0f} s)")
    return kept


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="*", type=Path, help="notebooks to run (default: every one that draws)")
    ap.add_argument("--flags", default="", help="nbdev-test flags whose cells run too, e.g. 'slow'")
    a = ap.parse_args()
    paths = [p.resolve() for p in a.notebooks] or sorted(p for p in NBS.rglob("*.ipynb")
                                                          if not any(s.startswith((".", "_")) for s in p.relative_to(NBS).parts) and draws(p))
    for p in paths: run_and_keep(p, a.flags.split())
    import subprocess
    subprocess.run([str(Path(sys.executable).parent / "nbdev-clean")], cwd=ROOT, check=True)


if __name__ == "__main__": main()
