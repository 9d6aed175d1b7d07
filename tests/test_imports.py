"""Pages that need no model must not pay for torch/diffusers (≈10 s of imports on 2 cores)."""

import subprocess
import sys
from pathlib import Path

PAGE_IMPORTS = (
    "import studio.ui, studio.ui_forms, studio.ui_sweeps, studio.ui_batches, studio.queue, studio.worker, "
    "studio.credits, studio.jobs, studio.validation, studio.catalogue, studio.job_requests, studio.sweeps, "
    "studio.compare, studio.batches, studio.presets, studio.history, studio.retention, studio.cli, "
    "pipelines.masks, pipelines.params"
)


def test_the_modules_pages_import_do_not_import_torch_or_diffusers():
    code = f"{PAGE_IMPORTS}; import sys; print(sorted(m for m in ('torch', 'diffusers') if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
