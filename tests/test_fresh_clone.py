"""A clone alone: missing shared data skips with a reason (fails under CI), the CLI explains
itself, and the shipped production template needs nothing outside the repository."""

from __future__ import annotations

from pathlib import Path

import helpers
import pytest

from gateway.cli import build_parser


def test_missing_shared_data_skips_with_its_path_and_the_variable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(helpers, "SHARED", tmp_path / "nowhere")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception) as info:
        helpers.require_shared("data", "x.jsonl.gz")
    assert str(tmp_path / "nowhere" / "data" / "x.jsonl.gz") in str(info.value)
    assert "R2_SHARED_DIR" in str(info.value)


@pytest.mark.parametrize("ci", ["true", "TRUE", "1"])
def test_missing_shared_data_fails_under_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            ci: str) -> None:
    monkeypatch.setattr(helpers, "SHARED", tmp_path / "nowhere")
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        helpers.require_shared("data")


def test_present_shared_data_is_returned(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data").mkdir()
    monkeypatch.setattr(helpers, "SHARED", tmp_path)
    monkeypatch.setenv("CI", "true")
    assert helpers.require_shared("data") == tmp_path / "data"


def help_of(command: str) -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return str(sub.choices[command].format_help())  # type: ignore[attr-defined]


def test_serve_help_documents_host_and_port() -> None:
    text = " ".join(help_of("serve").split())
    assert "--host H interface to listen on (default 127.0.0.1" in text
    assert "--port P TCP port to listen on (default 8080)" in text


def test_route_help_shows_metavars() -> None:
    text = help_of("route")
    assert "[--lambda L]" in text and "--lambda LAMBDA_" not in text
    assert "[--embeddings X.npy]" in text and "[--input-tokens N]" in text
