"""`edgepack-agent` command line: loopback-only without a token, and `info` on a fake device tree."""
from __future__ import annotations

import json

from click.testing import CliRunner

from device_bench.cli import is_loopback, main


def test_refuses_public_address_without_a_token(tmp_path):
    res = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0", "--port", "0", "--workdir", str(tmp_path)])
    assert res.exit_code == 2 and "without a token" in res.stderr and "\n" not in res.stderr.strip()
    empty = tmp_path / "empty-token"
    empty.write_text("\n")
    res = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0", "--token-file", str(empty), "--workdir", str(tmp_path)])
    assert res.exit_code == 2 and "is empty" in res.stderr
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10") and not is_loopback("pi.local")


def test_info_reports_sensors_of_a_fake_tree(tmp_path):
    zone = tmp_path / "class" / "powercap" / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "energy_uj").write_text("123\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    tz = tmp_path / "class" / "thermal" / "thermal_zone0"
    tz.mkdir(parents=True)
    (tz / "type").write_text("x86_pkg_temp\n")
    (tz / "temp").write_text("51000\n")
    res = CliRunner().invoke(main, ["info", "--json", "--sys-root", str(tmp_path), "--vcgencmd", ""])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["energy"]["source"] == "rapl:package-0" and data["energy"]["kind"] == "measured"
    assert data["thermal_zones"] == {"x86_pkg_temp": 51.0}
    assert data["runtimes"]["tflite"]
    text = CliRunner().invoke(main, ["info", "--sys-root", str(tmp_path / "nothing")])
    assert text.exit_code == 0 and "(estimated)" in text.stdout and "no thermal zones" in text.stdout
    res = CliRunner().invoke(main, ["info", "--power-cmd", "/nonexistent/meter"])
    assert res.exit_code == 2 and "--power-cmd" in res.stderr
