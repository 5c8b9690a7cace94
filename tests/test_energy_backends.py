"""Energy backends against fake sysfs trees (counters advanced by a thread), command meters, and the estimate."""
from __future__ import annotations

import os
import stat
import sys
import threading
import time
from pathlib import Path

import pytest

from device_bench.energy import EnergyConfig, EnergyError, EnergyMeter, detect
from device_bench.energy import sysfs
from device_bench.energy.commands import CommandSource, VcgencmdSource, parse_pmic
from device_bench.energy.estimate import CpuTimeEstimate, PowerProfile, choose_profile
from device_bench.energy.sampler import PowerSampler
from device_bench.energy.sysfs import BatterySource, HwmonEnergySource, HwmonPowerSource, IioPowerSource, RaplSource

PMIC_OUTPUT = """\
 3V7_WL_SW_A current(0)=0.10000000A
   3V3_SYS_A current(1)=0.20000000A
  VDD_CORE_A current(7)=1.00000000A
 3V7_WL_SW_V volt(8)=3.70000000V
   3V3_SYS_V volt(9)=3.30000000V
  VDD_CORE_V volt(15)=0.80000000V
     EXT5V_V volt(24)=5.10000000V
"""
PMIC_WATTS = 0.1 * 3.7 + 0.2 * 3.3 + 1.0 * 0.8


def _write(path: Path, value: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{value}\n")
    return path


class CounterThread(threading.Thread):
    """Advances a µJ counter file at a fixed power, wrapping at ``wrap`` like RAPL does."""

    def __init__(self, path: Path, watts: float, wrap: int | None = None, tick_s: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.path, self.watts, self.wrap, self.tick_s = path, watts, wrap, tick_s
        self.stop_event = threading.Event()
        self.wrapped = 0

    def set_watts(self, watts: float) -> None:
        self.watts = watts

    def run(self) -> None:
        value = int(self.path.read_text())
        last = time.monotonic()
        while not self.stop_event.wait(self.tick_s):
            now = time.monotonic()
            value += int(self.watts * (now - last) * 1e6)
            last = now
            if self.wrap is not None and value > self.wrap:
                value -= self.wrap
                self.wrapped += 1
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(f"{value}\n")
            tmp.replace(self.path)  # atomic, like a sysfs read never sees half a number

    def __enter__(self) -> "CounterThread":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.join()


def _rapl_tree(root: Path, start: int = 0, max_range: int = 10**9) -> Path:
    zone = root / "class" / "powercap" / "intel-rapl:0"
    _write(zone / "name", "package-0")
    _write(zone / "max_energy_range_uj", max_range)
    counter = _write(zone / "energy_uj", start)
    _write(zone.parent / "intel-rapl:0:0" / "name", "core")  # subzone: must not be added on top
    _write(zone.parent / "intel-rapl:0:0" / "energy_uj", 0)
    return counter


def _mean_power(source, seconds: float = 0.4, interval: float = 0.02) -> float:
    with PowerSampler(source, interval) as sampler:
        time.sleep(seconds)
    t0, t1 = sampler.times[0], sampler.times[-1]
    return sampler.energy_between(t0, t1) / (t1 - t0)


def test_rapl_counts_through_wraparound(tmp_path):
    counter = _rapl_tree(tmp_path, start=900_000, max_range=1_000_000)  # wraps every second at 1 W
    source = RaplSource(tmp_path / "class" / "powercap")
    assert source.source == "rapl:package-0"
    _write(counter, 999_000)
    first = source.read()
    _write(counter, 4_000)  # wrapped: 1_000 µJ to the top, then 4_000
    assert source.read() - first == pytest.approx(0.005)
    with CounterThread(counter, watts=4.0, wrap=1_000_000) as thread:  # wraps every 0.25 s
        power = _mean_power(source, seconds=0.8)
    assert thread.wrapped >= 2
    assert power == pytest.approx(4.0, rel=0.15)


def test_rapl_unreadable_falls_through_with_a_reason(tmp_path, monkeypatch):
    counter = _rapl_tree(tmp_path)
    counter.chmod(0)
    if os.geteuid() == 0:  # root reads mode-000 files; emulate the kernel's check for non-root users
        real = sysfs.read_int

        def read_int(path):
            if not stat.S_IMODE(os.stat(path).st_mode) & 0o444:
                raise PermissionError(13, "Permission denied", str(path))
            return real(path)

        monkeypatch.setattr(sysfs, "read_int", read_int)
    detection = detect(EnergyConfig.under(tmp_path, vcgencmd=None))
    assert detection.kind == "estimated"
    (rapl,) = [t for t in detection.tried if t["backend"] == "rapl"]
    assert "not readable by this user" in rapl["reason"]


def test_hwmon_ina3221_uses_the_board_input_rail(tmp_path):
    chip = tmp_path / "hwmon3"
    _write(chip / "name", "ina3221")
    for idx, (label, mv, ma) in enumerate([("VDD_IN", 5000, 1200), ("VDD_CPU_GPU_CV", 5000, 300), ("VDD_SOC", 5000, 200)], 1):
        _write(chip / f"in{idx}_label", label)
        _write(chip / f"in{idx}_input", mv)
        _write(chip / f"curr{idx}_input", ma)
    _write(tmp_path / "hwmon0" / "name", "nct6775")  # a desktop chip: ignored
    _write(tmp_path / "hwmon0" / "in0_input", 1000)
    source = HwmonPowerSource(tmp_path)
    assert source.source == "hwmon:ina3221:VDD_IN"
    assert source.read() == pytest.approx(6.0)  # 5 V × 1.2 A; the other rails are inside VDD_IN
    assert _mean_power(source) == pytest.approx(6.0, rel=1e-6)


def test_hwmon_power_and_energy_inputs(tmp_path):
    _write(tmp_path / "hwmon1" / "name", "ina219")
    _write(tmp_path / "hwmon1" / "power1_input", 2_500_000)  # µW
    assert HwmonPowerSource(tmp_path).read() == pytest.approx(2.5)
    _write(tmp_path / "e" / "hwmon2" / "name", "ina238")
    counter = _write(tmp_path / "e" / "hwmon2" / "energy1_input", 0)
    source = HwmonEnergySource(tmp_path / "e")
    with CounterThread(counter, watts=3.0):
        assert _mean_power(source) == pytest.approx(3.0, rel=0.15)


def test_jetson_jetpack4_iio_rails(tmp_path):
    dev = tmp_path / "iio:device0"
    for idx, (rail, mw) in enumerate([("POM_5V_IN", 4200), ("POM_5V_GPU", 800), ("POM_5V_CPU", 1500)]):
        _write(dev / f"rail_name_{idx}", rail)
        _write(dev / f"in_power{idx}_input", mw)
    source = IioPowerSource(tmp_path)
    assert source.source == "iio:POM_5V_IN" and source.read() == pytest.approx(4.2)


def test_battery_power_now_current_voltage_and_charging(tmp_path):
    _write(tmp_path / "AC" / "type", "Mains")
    bat = tmp_path / "BAT0"
    _write(bat / "type", "Battery")
    _write(bat / "status", "Discharging")
    _write(bat / "current_now", -1_500_000)  # µA, negative while discharging on some drivers
    _write(bat / "voltage_now", 4_000_000)  # µV
    assert BatterySource(tmp_path).read() == pytest.approx(6.0)
    _write(bat / "power_now", 7_000_000)
    assert BatterySource(tmp_path).read() == pytest.approx(7.0)
    _write(bat / "status", "Charging")
    with pytest.raises(Exception, match="Charging"):
        BatterySource(tmp_path)


def _script(path: Path, body: str) -> Path:
    path.write_text(f"#!{sys.executable}\n{body}\n")
    path.chmod(0o755)
    return path


def test_raspberry_pi5_pmic_via_vcgencmd(tmp_path):
    assert parse_pmic(PMIC_OUTPUT) == pytest.approx(PMIC_WATTS)
    fake = _script(tmp_path / "vcgencmd", f"import sys\nassert sys.argv[1] == 'pmic_read_adc'\nprint({PMIC_OUTPUT!r})")
    source = VcgencmdSource(str(fake))
    assert source.read() == pytest.approx(PMIC_WATTS)
    detection = detect(EnergyConfig.under(tmp_path / "empty-sys", vcgencmd=str(fake)))
    assert detection.kind == "measured" and detection.description == "vcgencmd:pmic_read_adc"


def test_external_meter_command_sampled_in_a_thread(tmp_path):
    meter = _script(tmp_path / "meter", "print('power: 4.5 W')")
    detection = detect(EnergyConfig.under(tmp_path, power_cmd=str(meter)))
    assert detection.kind == "measured" and detection.source.min_interval_s == 0.1
    with PowerSampler(detection.source, 0.01) as sampler:  # the command's minimum interval wins
        time.sleep(0.5)
    assert sampler.interval_s == 0.1 and 2 <= len(sampler.times) <= 8
    assert sampler.energy_between(sampler.times[0], sampler.times[-1]) / (sampler.times[-1] - sampler.times[0]) == pytest.approx(4.5)
    broken = _script(tmp_path / "broken", "import sys\nprint('meter offline', file=sys.stderr)\nsys.exit(1)")
    with pytest.raises(EnergyError, match="meter offline"):
        detect(EnergyConfig(power_cmd=str(broken)))
    with pytest.raises(EnergyError, match="no number"):
        CommandSource(f"{sys.executable} -c \"print('n/a')\"")


def test_meter_idle_baseline_and_window(tmp_path):
    counter = _rapl_tree(tmp_path)
    config = EnergyConfig.under(tmp_path, vcgencmd=None, sample_interval_s=0.01, idle_seconds=0.3)
    meter = EnergyMeter(config)
    assert meter.detection.description == "rapl:package-0"
    with CounterThread(counter, watts=2.0) as thread:
        meter.measure_idle()
        thread.set_watts(5.0)
        time.sleep(0.05)
        with meter.sampling() as sampler:
            t0 = time.monotonic()
            time.sleep(0.5)
            t1 = time.monotonic()
    result = meter.result(sampler, (t0, t1), cpu_time_s=0.5, runs=100)
    assert meter.idle_w == pytest.approx(2.0, rel=0.15)
    assert result.kind == "measured" and result.avg_power_w == pytest.approx(5.0, rel=0.15)
    assert result.mj_per_inference == pytest.approx(5.0 * (t1 - t0) / 100 * 1e3, rel=0.15)
    assert result.mj_above_idle_per_inference == pytest.approx(3.0 * (t1 - t0) / 100 * 1e3, rel=0.25)
    assert result.samples >= 20


def test_estimate_from_cpu_time_and_profiles(tmp_path):
    assert choose_profile(None, "Raspberry Pi 4 Model B Rev 1.4", "Cortex-A72", "aarch64").name == "raspberry-pi-4"
    assert choose_profile(None, None, "AMD EPYC", "x86_64").name == "generic-x86_64"
    assert choose_profile("jetson-nano", None, None, "x86_64").name == "jetson-nano"
    custom = _write(tmp_path / "board.json", '{"name": "my-board", "idle_w": 1.0, "active_w": 5.0, "cores": 4}')
    assert choose_profile(str(custom), None, None, "x86_64") == PowerProfile("my-board", 1.0, 5.0, 4)
    with pytest.raises(EnergyError, match="unknown"):
        choose_profile("no-such-board", None, None, "x86_64")
    est = CpuTimeEstimate(PowerProfile("b", idle_w=2.0, active_w=6.0, cores=4), cores=4)
    total, above = est.energy(cpu_time_s=2.0, window_s=2.0)  # one core busy for 2 s
    assert above == pytest.approx(2.0) and total == pytest.approx(2.0 * 2.0 + 2.0)
    meter = EnergyMeter(EnergyConfig(backend="estimate", power_profile=str(custom)))
    meter.measure_idle()
    r = meter.result(None, (10.0, 12.0), cpu_time_s=2.0, runs=1000)
    assert r.kind == "estimated" and r.source.endswith("my-board") and r.mj_above_idle_per_inference == pytest.approx(2.0)


@pytest.mark.slow
def test_bench_reports_measured_energy_from_a_fake_rapl(tmp_path, tmp_path_factory):
    from device_bench.bench import bench_bundle
    from test_device_bench_fixture import tiny_bundle_dir

    counter = _rapl_tree(tmp_path)
    config = EnergyConfig.under(tmp_path, vcgencmd=None, sample_interval_s=0.01, idle_seconds=0.5)
    with CounterThread(counter, watts=3.0):
        report = bench_bundle(tiny_bundle_dir(tmp_path_factory), targets=["tflite-fp32"], threads=[1], runs=20,
                              min_seconds=0.8, warmup=1, energy=config)
    (r,) = report.results
    assert r.status == "ok" and r.energy.kind == "measured" and r.energy.source == "rapl:package-0"
    # the fake counter is written by a thread of this busy test process, so allow for its scheduling lag
    assert r.energy.avg_power_w == pytest.approx(3.0, rel=0.25), r.energy
    assert r.energy.mj_per_inference == pytest.approx(3.0 * r.timed_s / r.runs * 1e3, rel=0.25)
    assert report.protocol["energy"]["kind"] == "measured"
    assert report.protocol["energy"]["idle_power_w"] == pytest.approx(3.0, rel=0.25)
