"""The CLI's answer to a closed pipe, a file-system error or a missing device: one line, status 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "memae_ts.cli"]
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def _one_error_line(stderr: str, command: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(f"memae-ts {command}: error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def _with_closed_stdout(*args: str) -> subprocess.CompletedProcess[str]:
    """Run with stdout a pipe whose reader has already gone (`... | head` once head exits)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [*CLI, *args], stdout=write_end, stderr=subprocess.PIPE, text=True, env=ENV, timeout=300
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize("command", ["score", "info"])
def test_a_closed_pipe_is_one_line_not_a_traceback(
    command: str, tiny_model_dir: Path, plant_csvs: tuple[Path, Path]
) -> None:
    args = [command, str(tiny_model_dir)] + ([str(plant_csvs[1])] if command == "score" else [])
    result = _with_closed_stdout(*args)
    assert result.returncode == 2
    assert "broken pipe" in _one_error_line(result.stderr, command)


def test_score_piped_into_head_stops_quietly(tiny_model_dir: Path, plant_csvs: tuple[Path, Path]) -> None:
    """The example of `score --help`, with a reader that leaves after a few lines (the output
    is larger than a pipe buffer, so the writer is still writing when it goes)."""
    with subprocess.Popen(
        [*CLI, "score", str(tiny_model_dir), str(plant_csvs[1])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        head = process.stdout.readline() + process.stdout.readline()
        process.stdout.close()
        stderr = process.stderr.read().decode()
        assert process.wait(timeout=300) == 2
    assert head.startswith(b"timestamp,")
    assert "broken pipe" in _one_error_line(stderr, "score")


def test_score_into_a_missing_directory_fails_before_scoring(
    tiny_model_dir: Path, plant_csvs: tuple[Path, Path]
) -> None:
    result = subprocess.run(
        [*CLI, "score", str(tiny_model_dir), str(plant_csvs[1]), "-o", "/nonexistent/dir/x.csv"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert result.returncode == 2
    line = _one_error_line(result.stderr, "score")
    assert "/nonexistent/dir/x.csv" in line and "does not exist" in line


def test_unwritable_output_file_is_one_line(
    tiny_model_dir: Path, plant_csvs: tuple[Path, Path], tmp_path: Path
) -> None:
    """Any other file-system error on the way (here: the output is a directory) is one line too."""
    result = subprocess.run(
        [*CLI, "score", str(tiny_model_dir), str(plant_csvs[1]), "-o", str(tmp_path)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert result.returncode == 2
    assert str(tmp_path) in _one_error_line(result.stderr, "score")


def test_os_errors_from_any_command_are_one_line(monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    from memae_ts import cli

    def handler(args):  # type: ignore[no-untyped-def]
        raise PermissionError(13, "Permission denied", "/var/lib/memae-ts/model")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser.set_defaults(handler=handler)
    parser._subparsers._group_actions[0].choices["info"].set_defaults(handler=handler)  # type: ignore[union-attr]
    assert cli.main(["info", "x"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "memae-ts info: error: /var/lib/memae-ts/model: Permission denied"


def test_fit_on_a_device_this_machine_lacks_is_one_line(
    plant_csvs: tuple[Path, Path], tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = subprocess.run(
        [*CLI, "fit", str(plant_csvs[0]), "-o", str(tmp_path / "m"), "--device", "cuda", "--epochs", "1"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert result.returncode == 2
    assert "--device cuda" in _one_error_line(result.stderr, "fit")
    assert not (tmp_path / "m").exists()
