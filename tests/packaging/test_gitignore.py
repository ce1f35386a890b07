"""The quick start (``pushreport serve`` in a clone) leaves nothing for ``git status``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from werkzeug.test import Client

from pushreport._config import StorageConfig
from pushreport_wsgi import Config, create_app

ROOT = Path(__file__).resolve().parents[2]
SELECTOR = "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14"
REPORT = f"/token/?selector={SELECTOR}&token_msgs=QVBBOTFiRzlhcVd2&appid_msgs=com.x.app"


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_what_the_default_backends_leave_beside_the_database_is_ignored(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    shutil.copy(ROOT / ".gitignore", tmp_path / ".gitignore")
    webhook = {
        "url": "http://127.0.0.1:9/hook",
        "secret": "whsec_" + "c2VjcmV0LWhvb2stMjQtYnl0ZXMtbG9uZyEh",
        "deliver": True,
    }
    for storage in (
        StorageConfig(),  # the embedded default: SQLite, spooled
        StorageConfig(backends=("webhook",), options={"webhook": webhook}),
    ):
        app = create_app(Config(storage=storage, base_dir=tmp_path))
        try:
            assert Client(app).get(REPORT).status_code == 200
            left = sorted(p.name for p in tmp_path.iterdir() if p.name != ".git")
            assert len(left) > 2, left  # the database and what stands beside it
            status = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=all"],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.splitlines()
            assert status == ["?? .gitignore"], left
        finally:
            app.close()
