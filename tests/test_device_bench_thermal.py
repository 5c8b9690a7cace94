"""Thermal zones and the device fingerprint, read from fake /sys and /proc trees."""
from __future__ import annotations

import threading
import time
from pathlib import Path

from device_bench.fingerprint import cpu_model, cpufreq, device_model, fingerprint
from device_bench.thermal import ThermalConfig, read_zones, wait_until_cool


def _zone(root: Path, n: int, kind: str, milli_c: int) -> Path:
    z = root / f"thermal_zone{n}"
    z.mkdir(parents=True, exist_ok=True)
    (z / "type").write_text(kind + "\n")
    (z / "temp").write_text(f"{milli_c}\n")
    return z / "temp"


def test_read_zones_names_and_units(tmp_path):
    _zone(tmp_path, 0, "cpu-thermal", 48312)
    _zone(tmp_path, 10, "gpu-thermal", 45000)
    _zone(tmp_path, 2, "cpu-thermal", 47000)  # repeated type gets its index
    bad = tmp_path / "thermal_zone3"
    bad.mkdir()
    (bad / "temp").write_text("garbage\n")
    assert read_zones(tmp_path) == {"cpu-thermal": 48.312, "cpu-thermal#2": 47.0, "gpu-thermal": 45.0}
    assert read_zones(tmp_path / "missing") == {}


def test_waits_until_cool_then_records(tmp_path):
    temp = _zone(tmp_path, 0, "soc", 82000)
    cooler = threading.Timer(0.3, lambda: temp.write_text("55000\n"))
    cooler.start()
    result = wait_until_cool(ThermalConfig(root=tmp_path, threshold_c=70.0, max_wait_s=10.0, poll_s=0.05))
    cooler.join()
    assert not result.started_hot and 0.2 <= result.waited_s < 5 and result.before_c == {"soc": 55.0}


def test_bounded_wait_marks_started_hot(tmp_path):
    _zone(tmp_path, 0, "soc", 90000)
    start = time.monotonic()
    result = wait_until_cool(ThermalConfig(root=tmp_path, threshold_c=70.0, max_wait_s=0.2, poll_s=0.05))
    assert result.started_hot and result.before_c == {"soc": 90.0} and time.monotonic() - start < 2


def test_fingerprint_from_fake_trees(tmp_path):
    proc = tmp_path / "proc"
    (proc / "device-tree").mkdir(parents=True)
    (proc / "device-tree" / "model").write_text("Raspberry Pi 5 Model B Rev 1.0\x00")
    (proc / "cpuinfo").write_text("processor\t: 0\nBogoMIPS\t: 108.00\nCPU part\t: 0xd0b\n\nModel\t\t: Raspberry Pi 5 Model B Rev 1.0\n")
    policy = tmp_path / "sys" / "devices" / "system" / "cpu" / "cpufreq" / "policy0"
    policy.mkdir(parents=True)
    for name, value in {"scaling_governor": "ondemand", "scaling_cur_freq": "2400000", "scaling_min_freq": "1500000",
                        "scaling_max_freq": "2400000", "affected_cpus": "0 1 2 3"}.items():
        (policy / name).write_text(value + "\n")
    assert device_model(proc) == "Raspberry Pi 5 Model B Rev 1.0"
    assert cpu_model(proc) == "Raspberry Pi 5 Model B Rev 1.0"
    assert cpufreq(tmp_path / "sys") == {"policy0": {"governor": "ondemand", "cur_mhz": 2400.0, "min_mhz": 1500.0,
                                                      "max_mhz": 2400.0, "cpus": [0, 1, 2, 3]}}
    fp = fingerprint(sys_root=tmp_path / "sys", proc_root=proc)
    assert fp["governor"] == "ondemand" and fp["cores_logical"] >= 1 and fp["memory_total_mb"] > 0
    assert "tflite" in fp["runtimes"] and fp["python"]
