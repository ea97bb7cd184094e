"""The page's tests: a repository with the committed models and two imported ones (``imported_models``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.service.conftest import fashion, vowels  # noqa: F401 (fixtures the page's tests share)
from tests.web.imported_models import repository_with_imports


@pytest.fixture(scope="session")
def page_repository(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return repository_with_imports(models_dir, tmp_path_factory.mktemp("page"))
