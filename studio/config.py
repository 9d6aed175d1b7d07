"""Settings, read once from the environment and `.streamlit/secrets.toml`.

Precedence: environment variable > `[studio]` table in secrets.toml > default.
Every setting has an environment name (`STUDIO_*`) so workers and tests can be configured
without touching files; secrets.toml keys are the same names in lower case without the prefix.
"""

from __future__ import annotations

import importlib.util
import os
import re
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from pipelines.errors import PipelineInputError
from pipelines.params import ATTENTION_BACKENDS, MAX_BATCH_JOBS, MemoryBudget
from studio.db.tables import Plan
from studio.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SECRETS_PATH = PROJECT_ROOT / ".streamlit" / "secrets.toml"

# The configured model name that means "the tiny offline preview model" (pipelines.registry.PREVIEW_MODEL).
PREVIEW_MODEL = "preview"
MAX_ADMIN_CREDITS = 1_000_000


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    models_dir: Path
    database_url: str
    model: str
    model_cost: int | None
    max_output_side: int
    warmup: bool
    in_process_worker: bool
    cookie_key: str | None
    cookie_name: str
    admin_username: str
    admin_password: str | None
    admin_email: str
    catalogue_path: Path  # the style catalogue (TOML), editable by admins without code
    retention_days: int  # uploads and results are deleted after this many days (0: kept forever)
    # How much memory a worker's loaded models may take before the least recently used is evicted
    # (STUDIO_MODEL_MEMORY: "24GiB", "80%", bytes; default 90 % of the device's memory, or of RAM on CPU).
    model_memory: MemoryBudget = field(default_factory=MemoryBudget)
    # Signing in (studio.accounts.sessions): a session ends after this long without a page view, and at the latest
    # this long after the sign-in.
    session_idle_minutes: int = 24 * 60
    session_max_days: int = 7
    # Behind a reverse proxy: the request header it puts the client's address in (X-Forwarded-For, X-Real-IP),
    # for sign-in throttling per client. None: the address of the connection itself.
    client_ip_header: str | None = None
    # Where images are stored (STUDIO_STORAGE_DIR): a folder every worker and the app can reach — a shared
    # mount when workers run on several hosts. None: `<data dir>/assets` on local disk.
    storage_dir: Path | None = None
    # Jobs one person may have queued or running at once (STUDIO_MAX_JOBS_PER_USER); a submit past it is refused.
    max_jobs_per_user: int = 300
    # Pixels one batch upload may decode in all (STUDIO_MAX_BATCH_MEGAPIXELS); the images past it are skipped.
    max_batch_megapixels: int = 1000

    @property
    def max_batch_pixels(self) -> int:
        return self.max_batch_megapixels * 1_000_000

    # Torch CPU threads of the Streamlit server's in-process worker (STUDIO_WORKER_THREADS). None: one core fewer
    # than the process may use, so the server keeps a core for the pages (studio.web.serving); 0: torch's choice.
    worker_threads: int | None = None
    # The longest a live job/sweep/batch panel waits between polls while nothing it shows changes (studio.web.live).
    poll_max_seconds: float = 4.0
    # The first admin's plan and the credits granted with the account (STUDIO_ADMIN_PLAN, STUDIO_ADMIN_CREDITS), so
    # a fresh install can use every feature (Batch is for Pro plans) before anyone else exists to grant credits.
    admin_plan: Plan = Plan.pro_monthly
    admin_credits: int = 1000
    # Jobs a worker claims together and runs in one batched denoising loop (STUDIO_BATCH_MAX; studio.jobs.batching).
    # 1: one at a time. None (unset): 1 on a CPU, where batching saves nothing; on a GPU as many as its free memory
    # holds at the model's measured footprint per image (studio.jobs.batching.batch_limit).
    batch_max: int | None = None
    # Opt-in speed options for a GPU (pipelines.cache.SpeedOptions): torch.compile each loaded model's denoiser
    # (STUDIO_COMPILE=1), and the attention backend (STUDIO_ATTENTION, one of pipelines.params.ATTENTION_BACKENDS;
    # None: diffusers' default, torch's scaled-dot-product attention).
    compile: bool = False
    attention: str | None = None

    @property
    def assets_dir(self) -> Path:
        return self.storage_dir if self.storage_dir is not None else self.data_dir / "assets"

    @property
    def staging_dir(self) -> Path:
        """Batch uploads validated but not submitted yet (studio.media.staging); local to the app's host."""
        return self.data_dir / "staging"

    @property
    def uses_preview_model(self) -> bool:
        return self.model == PREVIEW_MODEL


def _read_secrets(path: Path) -> dict[str, object]:
    if not path.is_file():
        return {}
    with path.open("rb") as fh:
        table = tomllib.load(fh).get("studio", {})
    return table if isinstance(table, dict) else {}


def _flag(value: str) -> bool:
    return value.strip().lower() not in ("0", "false", "no", "off")


def load_settings(environ: dict[str, str] | None = None, secrets_path: Path | None = None) -> Settings:
    env = os.environ if environ is None else environ
    secrets = _read_secrets(SECRETS_PATH if secrets_path is None else secrets_path)

    def get(name: str, default: str | None = None) -> str | None:
        value = env.get(f"STUDIO_{name.upper()}")
        if value is None:
            value = secrets.get(name)
        return default if value is None or value == "" else str(value)

    model_cost = get("model_cost")
    if model_cost is not None and (not model_cost.isdigit() or not 1 <= int(model_cost) <= 5):
        raise ConfigError(f"STUDIO_MODEL_COST must be a whole number 1–5 (credits per run), got {model_cost!r}")
    data_dir = Path(get("data_dir", str(PROJECT_ROOT / "data"))).expanduser().resolve()
    retention_days = get("retention_days", "30")
    if not retention_days.isdigit():
        raise ConfigError(
            f"STUDIO_RETENTION_DAYS must be a whole number of days (0 keeps everything), got {retention_days!r}"
        )
    max_side = get("max_output_side", "1024")
    if not max_side.isdigit() or not 256 <= int(max_side) <= 4096:
        raise ConfigError(f"STUDIO_MAX_OUTPUT_SIDE must be a whole number 256–4096, got {max_side!r}")
    idle_minutes = _whole_number("session_idle_minutes", get("session_idle_minutes", "1440"), minimum=1)
    max_days = _whole_number("session_max_days", get("session_max_days", "7"), minimum=1)
    if idle_minutes > max_days * 24 * 60:
        raise ConfigError(
            f"STUDIO_SESSION_IDLE_MINUTES ({idle_minutes}) is longer than STUDIO_SESSION_MAX_DAYS ({max_days} days): "
            "a session could never be idle that long"
        )
    max_jobs = get("max_jobs_per_user", "300")
    if not max_jobs.isdigit() or not 1 <= int(max_jobs) <= 100_000:
        raise ConfigError(
            f"STUDIO_MAX_JOBS_PER_USER must be a whole number 1–100000 (jobs queued or running per person), "
            f"got {max_jobs!r}"
        )
    max_megapixels = get("max_batch_megapixels", "1000")
    if not max_megapixels.isdigit() or not 1 <= int(max_megapixels) <= 100_000:
        raise ConfigError(
            f"STUDIO_MAX_BATCH_MEGAPIXELS must be a whole number 1–100000 (megapixels one batch upload may decode), "
            f"got {max_megapixels!r}"
        )
    worker_threads = get("worker_threads")
    if worker_threads is not None and not worker_threads.isdigit():
        raise ConfigError(
            f"STUDIO_WORKER_THREADS must be a whole number of torch threads (0: torch's choice), got {worker_threads!r}"
        )
    poll_max = get("poll_max_seconds", "4")
    if not re.fullmatch(r"\d+(\.\d+)?", poll_max) or not 1 <= float(poll_max) <= 60:
        raise ConfigError(f"STUDIO_POLL_MAX_SECONDS must be a number of seconds from 1 to 60, got {poll_max!r}")
    admin_plan = get("admin_plan", "pro_monthly")
    if admin_plan not in set(Plan):
        raise ConfigError(f"STUDIO_ADMIN_PLAN must be one of {', '.join(Plan)}; got {admin_plan!r}")
    admin_credits = get("admin_credits", "1000")
    if not (admin_credits.isascii() and admin_credits.isdigit()) or int(admin_credits) > MAX_ADMIN_CREDITS:
        raise ConfigError(
            f"STUDIO_ADMIN_CREDITS must be a whole number of credits 0–{MAX_ADMIN_CREDITS}, got {admin_credits!r}"
        )
    batch_max = get("batch_max")
    if batch_max is not None and (
        not (batch_max.isascii() and batch_max.isdigit()) or not 1 <= int(batch_max) <= MAX_BATCH_JOBS
    ):
        raise ConfigError(
            f"STUDIO_BATCH_MAX must be a whole number 1–{MAX_BATCH_JOBS} (jobs one worker runs in one loop; 1: one at "
            f"a time; unset: by memory on a GPU), got {batch_max!r}"
        )
    attention = get("attention")
    if attention is not None:
        _check_attention(attention.strip().lower())
    return Settings(
        data_dir=data_dir,
        models_dir=Path(get("models_dir", str(data_dir / "models"))).expanduser().resolve(),
        database_url=get("database_url", f"sqlite:///{data_dir / 'studio.db'}"),
        model=get("model", PREVIEW_MODEL),
        model_cost=None if model_cost is None else int(model_cost),
        max_output_side=int(max_side),
        warmup=_flag(get("warmup", "1")),
        in_process_worker=_flag(get("in_process_worker", "1")),
        cookie_key=get("cookie_key"),
        cookie_name=_cookie_name(get("cookie_name", "img2img_studio_auth")),
        admin_username=get("admin_username", "admin").strip().lower(),
        admin_password=get("admin_password"),
        admin_email=get("admin_email", "admin@example.com"),
        catalogue_path=Path(get("catalogue", str(PROJECT_ROOT / "data" / "styles.toml"))).expanduser().resolve(),
        retention_days=int(retention_days),
        storage_dir=_storage_dir(get("storage_dir")),
        model_memory=_model_memory(get("model_memory", "")),
        session_idle_minutes=idle_minutes,
        session_max_days=max_days,
        client_ip_header=get("client_ip_header"),
        max_jobs_per_user=int(max_jobs),
        max_batch_megapixels=int(max_megapixels),
        worker_threads=None if worker_threads is None else int(worker_threads),
        poll_max_seconds=float(poll_max),
        admin_plan=Plan(admin_plan),
        admin_credits=int(admin_credits),
        batch_max=None if batch_max is None else int(batch_max),
        compile=_flag(get("compile", "0")),
        attention=None if attention is None else attention.strip().lower(),
    )


def _check_attention(backend: str) -> None:
    """Refuse an attention backend diffusers 0.42 lacks, or one whose package is not installed, naming the choices."""
    if backend not in ATTENTION_BACKENDS:
        raise ConfigError(f"STUDIO_ATTENTION must be one of {', '.join(ATTENTION_BACKENDS)}; got {backend!r}")
    package = ATTENTION_BACKENDS[backend]
    if package is not None and importlib.util.find_spec(package) is None:
        torch_own = ", ".join(name for name, needs in ATTENTION_BACKENDS.items() if needs is None)
        raise ConfigError(
            f"STUDIO_ATTENTION={backend} needs the Python package {package!r}, which is not installed; install it "
            f"or choose one of torch's own: {torch_own}"
        )


def _model_memory(value: str) -> MemoryBudget:
    try:
        return MemoryBudget.parse(value)
    except PipelineInputError as exc:
        raise ConfigError(f"STUDIO_MODEL_MEMORY: {exc}") from exc


def _cookie_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value):
        raise ConfigError(f"STUDIO_COOKIE_NAME must be 1–64 letters, digits, '_' or '-', got {value!r}")
    return value


def _whole_number(name: str, value: str, *, minimum: int) -> int:
    if not (value.isascii() and value.isdigit()) or int(value) < minimum:
        raise ConfigError(f"STUDIO_{name.upper()} must be a whole number, at least {minimum}; got {value!r}")
    return int(value)


def _storage_dir(value: str | None) -> Path | None:
    if value is None:
        return None
    if "://" in value:
        raise ConfigError(
            f"STUDIO_STORAGE_DIR must be a folder (a shared mount for several hosts), got the URL {value!r}; "
            "object stores are not supported yet"
        )
    return Path(value).expanduser().resolve()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (tests call `get_settings.cache_clear()` after changing env)."""
    return load_settings()
