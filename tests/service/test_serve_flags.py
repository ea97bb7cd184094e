"""Every `nnserve serve` flag is a setting (the NNSERVE_* variable workers read) and is listed in the README; bad
settings are refused naming the flag, what came and why."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from service.hosting.server import FLAGS
from service.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_serve_flag_is_a_setting_and_listed_in_the_readme() -> None:
    settings = Settings.model_fields
    for name, _, _ in FLAGS:
        assert name.replace("-", "_") in settings, f"--{name} is no setting"
        assert re.search(rf"`--{name}[` ]", README), f"--{name} is not in the README's settings"


def test_bad_settings_are_refused_naming_the_flag_what_came_and_why(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "service.cli", "serve", "--repository", str(tmp_path),
                           "--allowed-batch-sizes", "1,,8", "--max-batch-size", "0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    assert "--allowed-batch-sizes (NNSERVE_ALLOWED_BATCH_SIZES): expected auto, any, or batch sizes above 0 " \
           "separated by commas, such as 1,8,64; got '1,,8'" in done.stderr, done.stderr
    assert "--max-batch-size (NNSERVE_MAX_BATCH_SIZE): Input should be greater than or equal to 1; got '0'" in \
        done.stderr, done.stderr
