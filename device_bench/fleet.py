"""Several devices at once: ``devices.yaml``, a fleet bench, and a reachability check.

``devices.yaml``::

    devices:
      - name: pi5
        url: https://pi5.local:8765
        fingerprint: "3A:91:…:0C"   # SHA-256 of the agent's certificate, pinned (`edgepack devices add`)
        token_file: tokens/pi5      # relative to this file; or `token: ...`
      - name: jetson
        url: https://jetson.local:8765
        fingerprint: "…"
        token_file: ~/.edgepack/jetson.token

An ``https://`` device needs its ``fingerprint``: every connection checks the
certificate against it before sending anything (a missing pin is refused, a
changed certificate is refused naming both fingerprints). ``http://`` is for
agents started with ``--insecure-http`` only.

Devices are benched concurrently (they are different machines); one that is
unreachable or rejects the bundle is reported in the fleet report, not fatal.
"""
from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from .client import AgentClient, AgentError, read_token
from .report import BenchReport, DeviceError, FleetReport, ReportError
from .tls import FingerprintError, normalize_fingerprint


class FleetError(ValueError):
    """A malformed devices file; one line naming the entry."""


@dataclass
class DeviceSpec:
    name: str
    url: str
    token: str | None = None
    fingerprint: str | None = None

    def client(self, timeout_s: float = 30.0) -> AgentClient:
        return AgentClient(self.url, self.token, timeout_s=timeout_s, fingerprint=self.fingerprint)


#: the keys of a devices.yaml entry (``fingerprint`` added with TLS; files without it still load)
DEVICE_KEYS = {"name", "url", "token", "token_file", "fingerprint"}


def load_devices(path: Path) -> list[DeviceSpec]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise FleetError(f"{path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise FleetError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    entries = data.get("devices") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise FleetError(f"{path}: expected a non-empty list under 'devices'")
    out: list[DeviceSpec] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise FleetError(f"{path}: devices[{i}] must be a mapping with name and url")
        unknown = set(entry) - DEVICE_KEYS
        if unknown:
            raise FleetError(f"{path}: devices[{i}] has unknown key(s) {sorted(unknown)}")
        name, url = entry.get("name"), entry.get("url")
        if not isinstance(name, str) or not name or not isinstance(url, str) or not url:
            raise FleetError(f"{path}: devices[{i}] needs a name and a url")
        token_file = entry.get("token_file")
        if token_file is not None:
            token_file = Path(str(token_file)).expanduser()
            if not token_file.is_absolute():
                token_file = Path(path).parent / token_file
        try:
            token = read_token(entry.get("token"), token_file)
            pin = normalize_fingerprint(entry["fingerprint"]) if entry.get("fingerprint") else None
        except (AgentError, FingerprintError) as exc:
            raise FleetError(f"{path}: devices[{i}] ({name}): {exc}") from None
        if pin and not url.startswith("https://"):
            raise FleetError(f"{path}: devices[{i}] ({name}): a fingerprint pins an https:// agent; the url is {url}")
        out.append(DeviceSpec(name=name, url=url, token=token, fingerprint=pin))
    names = [d.name for d in out]
    if len(set(names)) != len(names):
        raise FleetError(f"{path}: device names must be unique")
    return out


def add_device(path: Path, name: str, url: str, fingerprint: str | None = None,
               token_file: str | None = None) -> bool:
    """Add (or update, keeping its token) the entry NAME in ``path``, made if absent; True when it was added."""
    path = Path(path)
    doc: Any = {"devices": []}
    if path.exists():
        try:
            doc = yaml.safe_load(path.read_text()) or {"devices": []}
        except OSError as exc:
            raise FleetError(f"{path}: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise FleetError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if isinstance(doc, list):
        doc = {"devices": doc}
    if not isinstance(doc, dict) or not isinstance(doc.setdefault("devices", []), list):
        raise FleetError(f"{path}: expected a list under 'devices'")
    entries: list[Any] = doc["devices"]
    entry = next((e for e in entries if isinstance(e, dict) and e.get("name") == name), None)
    added = entry is None
    if entry is None:
        entry = {"name": name}
        entries.append(entry)
    entry["url"] = url
    if fingerprint:
        entry["fingerprint"] = fingerprint
    else:
        entry.pop("fingerprint", None)
    if token_file:
        entry.pop("token", None)
        entry["token_file"] = token_file
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
        tmp.replace(path)
    except OSError as exc:
        raise FleetError(f"{path}: {exc.strerror or exc}") from None
    return added


def bench_device(spec: DeviceSpec, bundle: Path, options: dict[str, Any],
                 progress: Callable[[int, int, str], None] | None = None) -> BenchReport:
    report = spec.client().bench(bundle, options, progress)
    report.device = spec.name
    return report


def bench_fleet(bundle: Path, devices: list[DeviceSpec], options: dict[str, Any],
                progress: Callable[[str, int, int, str], None] | None = None) -> FleetReport:
    """Bench every device concurrently; progress(device, done, total, label)."""
    fleet = FleetReport()
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(devices))) as pool:
        futures = {
            pool.submit(bench_device, d, bundle, options,
                        (lambda done, total, label, d=d: progress(d.name, done, total, label)) if progress else None): d
            for d in devices
        }
        results: dict[str, BenchReport | DeviceError] = {}
        for fut in concurrent.futures.as_completed(futures):
            d = futures[fut]
            try:
                results[d.name] = fut.result()
            except (AgentError, ReportError) as exc:
                results[d.name] = DeviceError(device=d.name, url=d.url, error=str(exc))
            except (KeyError, TypeError, ValueError) as exc:  # an answer that is not the v1 API
                results[d.name] = DeviceError(device=d.name, url=d.url, error=f"unexpected answer ({type(exc).__name__}: {exc})")
    for d in devices:  # keep the file's order
        r = results[d.name]
        (fleet.errors if isinstance(r, DeviceError) else fleet.reports).append(r)  # type: ignore[arg-type]
    return fleet


def check_device(spec: DeviceSpec) -> dict[str, Any]:
    """Reachability, versions, runtimes and sensors of one agent."""
    try:
        info = spec.client(timeout_s=10.0).info()
    except AgentError as exc:
        return {"name": spec.name, "url": spec.url, "reachable": False, "error": str(exc)}
    fp = info.get("fingerprint", {})
    return {
        "name": spec.name, "url": spec.url, "reachable": True,
        "api_version": info.get("api_version"),
        "agent_version": info.get("agent", {}).get("version"),
        "device": fp.get("device_model") or fp.get("cpu_model"),
        "python": fp.get("python"),
        "runtimes": {k: v for k, v in (info.get("runtimes") or {}).items() if v},
        "energy": {k: info.get("energy", {}).get(k) for k in ("source", "kind")},
        "thermal_zones": sorted((info.get("thermal") or {}).get("zones", {})),
    }


def check_devices(devices: list[DeviceSpec]) -> list[dict[str, Any]]:
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(devices))) as pool:
        return list(pool.map(check_device, devices))
