"""Every `nnserve serve` flag is a setting (the NNSERVE_* variable workers read) and is listed in the README."""

from __future__ import annotations

import re
from pathlib import Path

from service.hosting.server import FLAGS
from service.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_serve_flag_is_a_setting_and_listed_in_the_readme() -> None:
    settings = Settings.model_fields
    for name, _, _ in FLAGS:
        assert name.replace("-", "_") in settings, f"--{name} is no setting"
        assert re.search(rf"`--{name}[` ]", README), f"--{name} is not in the README's settings"
