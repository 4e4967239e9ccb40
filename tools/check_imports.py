"""Fail when qdash's imports break the layering of ARCHITECTURE.md: an import cycle, a route module importing another
route module, or a module importing from a layer below its own.

    .venv/bin/python tools/check_imports.py           # exit 1 and one line per problem, or a one-line summary
    .venv/bin/python tools/check_imports.py --graph   # also print every module's qdash imports

Every import counts, wherever it stands: at the top of a module, inside a function (a deferred import is still a
dependency), and `importlib.import_module("qdash...")` / `__import__("qdash...")` with a literal name. The source is
parsed, never imported, so the check needs none of qdash's dependencies.
"""
import argparse, ast, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "qdash"

# ARCHITECTURE.md's table, top to bottom: a module may import from its own layer and the layers above it; support
# (harnesses and benchmarks) may import anything. A name ending in ".*" covers a package's modules.
LAYERS = [
    ("base", ["qdash", "qdash.config", "qdash.errors", "qdash.timeutil", "qdash.lineproto", "qdash.memory"]),
    ("data", ["qdash.store"]),
    ("sources", ["qdash.collect", "qdash.collect.*"]),
    ("work", ["qdash.jobs", "qdash.lifeline", "qdash.calibration_params", "qdash.calibrate"]),
    ("model", ["qdash.model", "qdash.model.*"]),
    ("fleet", ["qdash.anomaly", "qdash.cascade", "qdash.episode", "qdash.drift", "qdash.history", "qdash.inbox"]),
    ("services", ["qdash.serving"]),
    ("surfaces", ["qdash.hub", "qdash.hub.*", "qdash.client", "qdash.dashboard", "qdash.dashboard.*", "qdash.cli"]),
    ("support", ["qdash.testing", "qdash.bench", "qdash.bench.*"]),
]
ANY = "support"
ROUTES = "qdash.hub.routes"
SKIP = {"qdash._modidx"}   # nbdev's symbol index: data, no imports


def module_name(path: Path, root: Path = ROOT) -> str:
    "qdash/hub/routes/status.py -> qdash.hub.routes.status; a package's __init__.py is the package."
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__": parts = parts[:-1]
    return ".".join(parts)


def layer_of(mod: str) -> str | None:
    "The layer `mod` belongs to, or None when the table has no row for it."
    for name, pats in LAYERS:
        for p in pats:
            if mod == p or (p.endswith(".*") and mod.startswith(p[:-1])): return name
    return None


def _resolve(importer: str, is_pkg: bool, level: int, module: str | None) -> str:
    "The absolute name of `from <level dots><module> import ...` written in `importer`."
    if level == 0: return module or ""
    base = importer.split(".") if is_pkg else importer.split(".")[:-1]
    if level > 1: base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _literal_import(call: ast.Call) -> str | None:
    "The module named by `importlib.import_module('...')` or `__import__('...')` with a literal first argument."
    f = call.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
    if name not in ("import_module", "__import__") or not call.args: return None
    a = call.args[0]
    return a.value if isinstance(a, ast.Constant) and isinstance(a.value, str) else None


def imports_of(path: Path, mod: str, known: set[str]) -> dict[str, int]:
    "The qdash modules that `mod` (source at `path`) imports, each with the line of its first import."
    tree, is_pkg = ast.parse(path.read_text(encoding="utf-8"), str(path)), path.name == "__init__.py"
    found: dict[str, int] = {}

    def add(target: str, line: int):
        while target and target not in known: target = target.rpartition(".")[0]   # qdash.store.open_store -> qdash.store
        if target and target != mod: found.setdefault(target, line)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "qdash": add(a.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(mod, is_pkg, node.level, node.module)
            if base.split(".")[0] != "qdash": continue
            for a in node.names:   # `from qdash.hub import http` imports the module qdash.hub.http
                add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base, node.lineno)
        elif isinstance(node, ast.Call):
            name = _literal_import(node)
            if name and name.split(".")[0] == "qdash": add(name, node.lineno)
    return found


def build_graph(pkg: Path = PKG) -> tuple[dict[str, dict[str, int]], dict[str, Path]]:
    "Every qdash module's qdash imports (module -> {imported module: line}), and each module's file."
    files = {module_name(p, pkg.parent): p for p in sorted(pkg.rglob("*.py")) if "__pycache__" not in p.parts}
    files = {m: p for m, p in files.items() if m not in SKIP}
    known = set(files)
    return {m: imports_of(p, m, known) for m, p in files.items()}, files


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    "The strongly connected components with more than one module (Tarjan), each sorted: every import cycle is in one."
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]; n[0] += 1
        stack.append(v); on.add(v)
        for w in graph.get(v, {}):
            if w not in index: visit(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: out.append(sorted(comp))

    sys.setrecursionlimit(max(1000, 10 * len(graph)))
    for v in sorted(graph):
        if v not in index: visit(v)
    return out


def shortest_cycle(graph: dict[str, dict[str, int]], comp: set[str]) -> list[str]:
    "The shortest import cycle inside one strongly connected component, as [a, b, ..., a]."
    best = None
    for start in sorted(comp):
        prev, frontier, found = {start: None}, [start], None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v]):
                    if w == start: found = v; break
                    if w in comp and w not in prev: prev[w] = v; nxt.append(w)
                if found is not None: break
            frontier = nxt
        if found is None: continue
        path, v = [start], found
        while v is not None and v != start: path.insert(1, v); v = prev[v]
        path.append(start)
        if best is None or len(path) < len(best): best = path
    return best


def _rel(path: Path) -> Path:
    try: return path.relative_to(ROOT)
    except ValueError: return path


def problems(graph: dict[str, dict[str, int]], files: dict[str, Path]) -> list[str]:
    "One line per broken rule, naming the file, the line and the rule."
    order = [name for name, _ in LAYERS]
    out = []
    for comp in cycles(graph):
        loop = shortest_cycle(graph, set(comp))
        steps = "; ".join(f"{_rel(files[a])}:{graph[a][b]} imports {b}" for a, b in zip(loop, loop[1:]))
        more = f" (one of the cycles among {len(comp)} modules: {', '.join(comp)})" if len(comp) > len(loop) - 1 else ""
        out.append(f"import cycle {' -> '.join(loop)}: {steps}{more}")
    for mod in sorted(graph):
        where = _rel(files[mod])
        mine = layer_of(mod)
        if mine is None:
            out.append(f"{where}: {mod} is in no layer of ARCHITECTURE.md's table: add it to LAYERS in tools/check_imports.py and to the table")
            continue
        for dep, line in sorted(graph[mod].items(), key=lambda kv: kv[1]):
            if mod.startswith(ROUTES + ".") and dep.startswith(ROUTES + "."):
                out.append(f"{where}:{line}: route module {mod} imports route module {dep}: "
                           "route modules never import each other (move what both need below them)")
            theirs = layer_of(dep)
            if mine == ANY or theirs is None: continue
            if order.index(theirs) > order.index(mine):
                out.append(f"{where}:{line}: {mod} ({mine}) imports {dep} ({theirs}), a lower layer: "
                           f"a {mine} module may import only from {', '.join(order[: order.index(mine) + 1])}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graph", action="store_true", help="print every module's qdash imports first")
    ap.add_argument("--package", default=str(PKG), help="the package directory to check (default: qdash/)")
    a = ap.parse_args(argv)
    graph, files = build_graph(Path(a.package))
    if a.graph:
        for m in sorted(graph): print(f"{m} [{layer_of(m)}]: {', '.join(sorted(graph[m])) or '-'}")
    found = problems(graph, files)
    for line in found: print(line, file=sys.stderr)
    if found:
        print(f"check_imports: {len(found)} problem(s) in {len(graph)} modules", file=sys.stderr)
        return 1
    print(f"check_imports: {len(graph)} modules, {sum(map(len, graph.values()))} imports: no cycle, no route-to-route import, no import from a lower layer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
