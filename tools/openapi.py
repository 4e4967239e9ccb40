"""Write api/openapi.json from the hub's routes, or with --check fail when the checked-in file is stale.

    .venv/bin/python tools/openapi.py          # regenerate api/openapi.json
    .venv/bin/python tools/openapi.py --check  # exit 1 if api/openapi.json differs from the app's spec
"""
import argparse, json, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def build_spec() -> dict:
    "The OpenAPI document the hub serves at /docs/openapi.json, built without opening a store or a socket."
    import logging
    logging.disable(logging.WARNING)
    from qdash.hub.app import create_app
    from qdash.config import load_settings
    tmp = Path(tempfile.mkdtemp())
    (tmp / "empty.ini").write_text("")  # defaults only: the spec must not depend on a local settings.ini
    s = load_settings(tmp / "empty.ini", environ={}).updated({"store": {"path": ":memory:"}, "auth": {"api_key": "spec-only"}})
    app = create_app(s, start=False)
    _, r = app.test_client.get("/docs/openapi.json")
    if r.status != 200: raise SystemExit(f"the app answered {r.status} for /docs/openapi.json")
    return r.json


def render(spec: dict) -> str: return json.dumps(spec, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if api/openapi.json is stale instead of writing it")
    ap.add_argument("--out", default=str(ROOT / "api" / "openapi.json"))
    a = ap.parse_args(argv)
    text, out = render(build_spec()), Path(a.out)
    if a.check:
        if not out.is_file() or out.read_text(encoding="utf-8") != text:
            print(f"{out} is stale: run .venv/bin/python tools/openapi.py and commit the result", file=sys.stderr)
            return 1
        print(f"{out} is up to date")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
