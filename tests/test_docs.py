"""The docs stay true: README.md and docs/*.md name only things that exist.

Every relative link resolves (the file, and its #anchor as GitHub renders headings); every
``python -m camclone_jax.<module>`` named is a module, and its ``--help`` exits 0 (all of them in
one subprocess, to keep the suite's budget); every ``configs/<name>.py`` and every script of
benchmarks/, launch/ and notebooks/ named exists.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + sorted(
    os.path.join("docs", f) for f in os.listdir(os.path.join(ROOT, "docs")) if f.endswith(".md"))

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
MODULE = re.compile(r"python -m (camclone_jax(?:\.[A-Za-z_][A-Za-z0-9_]*)*)")
CONFIG = re.compile(r"(?<![\w/])configs/([A-Za-z0-9_]+)\.py")
FILE = re.compile(r"(?<![\w/.])((?:benchmarks|launch|notebooks)/[A-Za-z0-9_]+\.(?:py|sh|sbatch|ipynb))")
FENCE = re.compile(r"^(```|~~~)")


def read(page: str) -> str:
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
        return f.read()


def slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, markup and punctuation dropped, spaces to '-'."""
    text = re.sub(r"`|\*\*|__", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link keeps its text
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: str) -> set[str]:
    """The anchors a page defines: its headings (outside code fences, duplicates numbered as
    GitHub does) and explicit <a id="..."> / <a name="..."> tags."""
    found, seen, fenced = set(), {}, False
    for line in read(page).splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            continue
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            s = slug(m.group(1))
            n = seen.get(s, 0)
            seen[s] = n + 1
            found.add(s if n == 0 else f"{s}-{n}")
    found.update(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", read(page)))
    return found


def links(page: str):
    for target in LINK.findall(read(page)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        yield target


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_resolve(page):
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        file = os.path.normpath(os.path.join(ROOT, os.path.dirname(page), path)) if path \
            else os.path.join(ROOT, page)
        if not os.path.exists(file):
            broken.append(f"{target}: no such file")
        elif anchor and file.endswith(".md") and anchor not in anchors(os.path.relpath(file, ROOT)):
            broken.append(f"{target}: no heading or anchor #{anchor}")
    assert not broken, f"{page}: broken links:\n" + "\n".join(broken)


def test_slug_matches_github():
    assert slug("Conditioning conventions (the release's, by default)") == \
        "conditioning-conventions-the-releases-by-default"
    assert slug("Small-scale reproduction (issue #11): results") == \
        "small-scale-reproduction-issue-11-results"
    assert slug("Text and image encoders (umT5-XXL, CLIP ViT-H/14)") == \
        "text-and-image-encoders-umt5-xxl-clip-vit-h14"


def named_modules() -> list[str]:
    return sorted({m for page in PAGES for m in MODULE.findall(read(page))})


def test_named_configs_exist():
    missing = [f"{page}: configs/{name}.py" for page in PAGES for name in CONFIG.findall(read(page))
               if not os.path.isfile(os.path.join(ROOT, "configs", f"{name}.py"))]
    assert not missing, "named configs that do not exist:\n" + "\n".join(missing)


def test_named_scripts_exist():
    missing = [f"{page}: {name}" for page in PAGES for name in FILE.findall(read(page))
               if not os.path.isfile(os.path.join(ROOT, name))]
    assert not missing, "named scripts that do not exist:\n" + "\n".join(missing)


def test_named_modules_exist():
    modules = named_modules()
    assert "camclone_jax.train" in modules  # the pattern still finds the README's commands
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    assert not missing, f"named modules that do not exist: {missing}"


HELP = r"""
import contextlib, io, json, runpy, sys, warnings
warnings.simplefilter("ignore")
codes = {}
for module in sys.argv[1:]:
    sys.argv = [module, "--help"]
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException as e:  # an import error or a crash: report it, go on
        code, out = repr(e), io.StringIO(repr(e))
    codes[module] = [code, out.getvalue()[-400:]]
print("HELP-CODES " + json.dumps(codes))
"""


def test_named_modules_help_exits_0():
    modules = [m for m in named_modules() if importlib.util.find_spec(m) is not None]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    run = subprocess.run([sys.executable, "-c", HELP, *modules], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    line = [x for x in run.stdout.splitlines() if x.startswith("HELP-CODES ")]
    assert line, f"the --help runner failed:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}"
    codes = json.loads(line[-1][len("HELP-CODES "):])
    failed = {m: c for m, c in codes.items() if c[0] != 0}
    assert not failed, "`python -m MODULE --help` did not exit 0:\n" + "\n".join(
        f"{m}: {c[0]}\n{c[1]}" for m, c in failed.items())
