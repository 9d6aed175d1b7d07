"""The layout's rules, read from the source (every import, also those inside functions):

- `pipelines` never imports `studio` (the model code knows nothing of queues, credits or pages);
- only `pipelines` imports the model stack (torch, diffusers, transformers, peft, controlnet-aux);
- only `studio/web`, `pages/` and `streamlit_app.py` import streamlit; the domain packages never import `studio.web`;
- and, run for real, the modules the pages import pull in neither torch nor diffusers (≈10 s on 2 cores).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODEL_STACK = {"torch", "diffusers", "transformers", "peft", "controlnet_aux", "accelerate"}
STREAMLIT = {"streamlit", "streamlit_authenticator", "streamlit_drawable_canvas", "extra_streamlit_components"}


def imported(path: Path, *, at_the_top: bool = False) -> set[str]:
    """Every module `path` imports, anywhere in it (or only at module level, what importing it runs)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in tree.body if at_the_top else ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def top(modules: set[str]) -> set[str]:
    return {module.split(".")[0] for module in modules}


def sources(*patterns: str) -> list[Path]:
    return sorted(path for pattern in patterns for path in ROOT.glob(pattern))


WEB = sources("streamlit_app.py", "pages/**/*.py", "studio/web/*.py")
DOMAIN = [path for path in sources("studio/**/*.py") if "web" not in path.relative_to(ROOT / "studio").parts]
PIPELINES = sources("pipelines/**/*.py")


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", PIPELINES, ids=rel)
def test_the_model_code_never_imports_the_studio(path):
    assert "studio" not in top(imported(path))


@pytest.mark.parametrize("path", WEB + DOMAIN, ids=rel)
def test_only_the_model_code_imports_the_model_stack(path):
    assert not top(imported(path)) & MODEL_STACK


@pytest.mark.parametrize("path", DOMAIN + PIPELINES, ids=rel)
def test_only_the_web_helpers_and_pages_import_streamlit(path):
    assert not top(imported(path)) & STREAMLIT


@pytest.mark.parametrize("path", DOMAIN, ids=rel)
def test_the_domain_never_imports_the_web_helpers(path):
    assert not {module for module in imported(path) if module == "studio.web" or module.startswith("studio.web.")}


def test_every_package_is_covered():
    assert len(WEB) > 20 and len(DOMAIN) > 40 and len(PIPELINES) > 10


def test_the_modules_pages_import_load_neither_torch_nor_diffusers():
    # What a page's run imports; the model code a job or a guide preview needs is imported in the function.
    ours = {"studio", "pipelines"}
    modules = sorted({module for path in WEB for module in imported(path, at_the_top=True) if top({module}) & ours})
    code = (
        f"import importlib; [importlib.import_module(m) for m in {modules!r}]; import sys; "
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
