"""`gridctl data ...` end to end through the real top-level app: sample, info, resample, import, errors."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner, Result

from gridctl.cli import app

runner = CliRunner()


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(app, ["data", *args], env=env)


def test_sample_info_resample(tmp_path: Path) -> None:
    result = run("sample", "--data-dir", str(tmp_path), "--days", "2", "--seed", "3", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert (payload["bars"], payload["funding"], payload["seed"]) == (2 * 1440, 6, 3)

    result = run("resample", "--exchange", "sample", "--symbol", "BTC/USDT:USDT", "--to", "4h", "--json",
                 env={"GRIDCTL_DATA_DIR": str(tmp_path)})  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"built": 12, "dropped": 0, "from": "1m", "to": "4h"}  # 48 h / 4 h

    result = run("info", "--json", env={"GRIDCTL_DATA_DIR": str(tmp_path)})
    series = {s["series"]: s for s in json.loads(result.stdout)["series"]}
    assert set(series) == {"1m", "4h", "mark_1m", "funding"}
    assert series["1m"]["rows"] == 2880 and series["1m"]["gaps"] == 0
    assert series["4h"]["rows"] == 12

    text = run("info", "--data-dir", str(tmp_path)).stdout
    assert "sample       BTC/USDT:USDT    1m" in text and "2,880 rows" in text


def test_import_and_errors_exit_2(tmp_path: Path, real_data: Path) -> None:
    source = str(real_data / "freqtrade_xrp")
    result = run("import", source, "--data-dir", str(tmp_path), "--symbol", "ETH/USDT:USDT")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "but ETH/USDT:USDT was requested" in result.stderr
    assert "Traceback" not in result.output

    result = run("import", source, "--data-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "imported binanceusdm XRP/USDT:USDT trade 5m: 1,999 rows" in result.stdout
    assert "funding timestamp(s) within 1000 ms of the hour were normalised" in result.stdout

    result = run(
        "resample", "--symbol", "XRP/USDT:USDT", "--from", "5m", "--to", "7m", "--data-dir", str(tmp_path)
    )
    assert result.exit_code == 2 and "unknown timeframe '7m'" in result.stderr
    result = run("sample", "--data-dir", str(tmp_path), "--days", "0")
    assert result.exit_code == 2 and result.stderr == "error: --days takes an integer in 1..3650, got 0\n"


def test_a_shorter_sample_over_a_stored_one_needs_force(tmp_path: Path) -> None:
    """`data sample --days 2` over a stored 4-day sample used to replace it without a word."""
    assert run("sample", "--data-dir", str(tmp_path), "--days", "4").exit_code == 0
    partition = tmp_path / "sample" / "BTC_USDT_USDT" / "1m" / "2024-01.parquet"
    before = partition.read_bytes()
    result = run("sample", "--data-dir", str(tmp_path), "--days", "2")
    assert result.exit_code == 2
    assert "stored sample (5,760 bars" in result.stderr and "(2,880 bars" in result.stderr
    assert "--force" in result.stderr and partition.read_bytes() == before
    seed = run("sample", "--data-dir", str(tmp_path), "--days", "4", "--seed", "8")
    assert seed.exit_code == 2 and "other prices (another seed)" in seed.stderr
    assert run("sample", "--data-dir", str(tmp_path), "--days", "4").exit_code == 0  # the same: no change
    forced = run("sample", "--data-dir", str(tmp_path), "--days", "2", "--force", "--json")
    assert forced.exit_code == 0 and json.loads(forced.stdout)["bars"] == 2880
