"""All settings in one place, read from `DRIFTBENCH_*` environment variables.

The app, the workers and (later) Alembic read the same `settings` object, so a
threshold or a path never has two sources of truth.
"""

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DRIFTBENCH_")

    data_dir: Path = Field(
        default=Path("driftbench-data"),
        description="Where example models and (later) stored results live.",
    )
    verdict_rounding_rel_l2: float = Field(
        default=1e-5,
        gt=0,
        description="Largest rel_l2 still called float32 rounding.",
    )
    verdict_reduced_precision_rel_l2: float = Field(
        default=1e-2,
        gt=0,
        description="Largest rel_l2 called reduced precision (TF32, float16); above is a mismatch.",
    )
    histogram_bins: int = Field(default=41, ge=3, le=1001)
    keras_batch_size: int = Field(default=256, ge=1)
    onednn: Literal["default", "on", "off"] = Field(
        default="default",
        description="TF_ENABLE_ONEDNN_OPTS for keras-cpu; 'default' leaves TensorFlow's choice.",
    )
    chromium_path: Path = Field(
        default=Path("/usr/bin/chromium"),
        description="The Chromium the TF.js backends drive (Debian's `chromium` package).",
    )
    browser_job_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="Time limit of one TF.js job in the page; a hang restarts the browser.",
    )
    tfjs_batch_size: int = Field(default=256, ge=1, description="batchSize of TF.js predict.")


settings = Settings()
