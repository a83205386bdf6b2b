"""mipart-extender's TLS flags: what goes together, and what it says when it does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from mipart.scheduler_extender import main as extender_main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        extender_main.main(list(argv))
    assert exit_.value.code == 2
    return capsys.readouterr().err


def test_the_three_tls_files_go_together(capsys: pytest.CaptureFixture[str]) -> None:
    err = run(capsys, "--tls-cert=a.crt", "--tls-key=a.key", "--status-listen=127.0.0.1:9")
    assert "--tls-cert, --tls-key and --client-ca go together (given: --tls-cert, --tls-key)" in err


def test_tls_needs_a_status_listener(capsys: pytest.CaptureFixture[str]) -> None:
    err = run(capsys, "--tls-cert=a.crt", "--tls-key=a.key", "--client-ca=ca.crt")
    assert "--status-listen: required with --tls-cert" in err


def test_a_listen_address_without_a_port_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    err = run(capsys, "--status-listen=localhost")
    assert "--status-listen: 'localhost' is not host:port" in err


def test_files_that_do_not_load_stop_it_at_start(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "tls.crt").write_text("not a certificate")
    (tmp_path / "tls.key").write_text("not a key")
    (tmp_path / "ca.crt").write_text("not a CA")
    err = run(
        capsys,
        f"--tls-cert={tmp_path / 'tls.crt'}",
        f"--tls-key={tmp_path / 'tls.key'}",
        f"--client-ca={tmp_path / 'ca.crt'}",
        "--status-listen=127.0.0.1:0",
    )
    assert "mipart-extender: cannot load --tls-cert/--tls-key/--client-ca" in err
