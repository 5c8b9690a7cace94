"""Use a bundle on the device: text in, label or embedding out. What `edgepack run` and an application call.

    from device_bench.predict import Bundle

    bundle = Bundle("out/intent")                 # the fastest verified artifact on this device
    for p in bundle.predict(["book a table for two", "what's my balance"]):
        print(p.label, p.score)

The bundle's own tokenizer (HF ``tokenizers``) turns each text into ids, padded only to the input shape
the artifact needs (``shape_for_length``), the device runner runs the artifact, and the task's decoder
(``decoders``) turns the output into a prediction. No torch, no transformers: only the runner of the
chosen artifact imports its runtime (torch for ``.ptl``/``.pte``).

Without ``target``, the artifact is the fastest verified one on this device by measurement (``speed_profile``):
the profile ``edgepack bench`` stored here, else a short probe now (stored for the next load); ``choose="order"``
keeps the fixed order of ``choose_target``. ``Bundle.choice`` says what was chosen and on what evidence.
``threads`` is then a budget: the artifact runs at the thread count, up to it, it was fastest with
(``Bundle.run_threads``); with ``target`` it is the runtime's thread count as given.
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np

from .decoders import DecoderError, Prediction, decoder_for
from .extra_runners import ExtraRunnerError, register_extra_runners
from .fingerprint import device_runtimes, int8_kernel_family
from .manifest import STATUS_OK, Manifest, ManifestError, TargetEntry, verify_files
from .runners import RUNNERS, Runner, RunnerUnavailable, load_target, runner_class
from .shapes import padded_length
from . import speed_profile as speed
from .tokenizer import BundleTokenizer, TokenizedText, TokenizerError

#: runtimes whose runner loads torch into the process: chosen by default only when nothing lighter can run
TORCH_RUNTIMES = ("torch-lite", "executorch")
#: how a Bundle picks its target without ``target``: the fastest by measurement, or the fixed order
CHOOSE_FASTEST, CHOOSE_ORDER = "fastest", "order"
CHOOSE = (CHOOSE_FASTEST, CHOOSE_ORDER)


class BundleError(ValueError):
    """The bundle cannot be run here as asked; one line for the user."""


def max_tokens(manifest: Manifest, entry: TargetEntry) -> int:
    """The most tokens ``entry``'s artifact takes: longer texts are truncated to this."""
    return int(manifest.input_spec.seq_len)


def shape_for_length(manifest: Manifest, entry: TargetEntry, n_tokens: int) -> int:
    """The sequence length to pad a text of ``n_tokens`` tokens to for ``entry``'s artifact: the smallest
    bucket that holds it, the text's own length on a dynamic axis, ``seq_len`` for a single static shape."""
    return padded_length(entry, int(manifest.input_spec.seq_len), n_tokens)


def _runtime_problem(entry: TargetEntry, installed: dict[str, str | None]) -> str | None:
    if entry.runtime not in RUNNERS:
        return f"unknown runtime {entry.runtime!r}"
    if installed.get(entry.runtime) is None:
        try:
            dists = " or ".join(runner_class(entry.runtime).distributions)
        except (ImportError, AttributeError):
            dists = f"a runner for {entry.runtime!r}"
        return f"runtime {entry.runtime!r} is not installed here (pip install {dists})"
    return None


def choose_target(manifest: Manifest, name: str | None = None,
                  installed: dict[str, str | None] | None = None) -> TargetEntry:
    """``name``'s entry, checked; else the best target this device can run: parity passed first (at pack time,
    and on this device's int8 kernel family where the pack checked it), then runtimes that do not load torch
    (tflite, onnxruntime), then the bundle's own order (``pack --targets``)."""
    installed = device_runtimes() if installed is None else installed
    if name is not None:
        known = {t.name: t for t in manifest.targets}
        if name not in known:
            raise BundleError(f"--target {name}: not in this bundle (it has: {', '.join(known) or 'none'})")
        entry = known[name]
        if entry not in manifest.runnable_targets():
            raise BundleError(f"--target {name}: no artifact (failed at pack time: {entry.error or 'unknown error'})")
        problem = _runtime_problem(entry, installed)
        if problem:
            raise BundleError(f"--target {name}: {problem}")
        return entry
    runnable = manifest.runnable_targets()
    if not runnable:
        raise BundleError("this bundle has no artifact (every target failed at pack time)")
    candidates = [(i, t) for i, t in enumerate(runnable) if _runtime_problem(t, installed) is None]
    if not candidates:
        why = "; ".join(f"{t.name}: {_runtime_problem(t, installed)}" for t in runnable)
        raise BundleError(f"no target of this bundle can run here ({why})")
    family = int8_kernel_family()
    return min(candidates, key=lambda it: (it[1].status != STATUS_OK or family_shortfall(it[1], family) is not None,
                                           it[1].runtime in TORCH_RUNTIMES, it[0]))[1]


def family_shortfall(entry: TargetEntry, family: str) -> str | None:
    """Why ``entry`` is not verified for an int8 kernel family: its pack-time check with that family's kernels
    (``pack --verify-isa``) missed the gate. None when it passed there, or was not (or could not be) checked."""
    for record in entry.parity_by_isa:
        if record.isa == family and not record.passed and record.error is None:
            missed = "; ".join(record.shortfalls) or "below the gate"
            return f"{entry.name}: below its parity gate on {family} kernels at pack time ({missed})"
    return None


def passed_over(manifest: Manifest, family: str | None = None) -> list[str]:
    """Why each artifact missing its gate on this device's int8 family at pack time is not chosen (``Choice.notes``)."""
    family = int8_kernel_family() if family is None else family
    return [why for t in manifest.runnable_targets() if (why := family_shortfall(t, family))]


def verified_here(manifest: Manifest, installed: dict[str, str | None],
                  family: str | None = None) -> list[TargetEntry]:
    """The verified artifacts (parity passed at pack time, and on this device's int8 kernel family where the pack
    checked it) whose runtime this device has, in pack order."""
    family = int8_kernel_family() if family is None else family
    return [t for t in manifest.runnable_targets() if t.status == STATUS_OK and _runtime_problem(t, installed) is None
            and family_shortfall(t, family) is None]


def probe_candidates(manifest: Manifest, installed: dict[str, str | None]) -> list[TargetEntry]:
    """What the load-time probe times: the verified artifacts runnable here, without those whose runner loads
    torch when a lighter one exists (importing torch alone takes longer than the probe's budget)."""
    verified = verified_here(manifest, installed)
    light = [t for t in verified if t.runtime not in TORCH_RUNTIMES]
    return light or verified


class Bundle:
    """A packed bundle, ready to run one of its artifacts on texts here.

    ``target``: a target name from the manifest (default: the fastest verified artifact here, see the module
    docstring; ``choose="order"``: ``choose_target``'s fixed order); ``threads``: the runtime's thread count
    with ``target`` or the fixed order, the budget the fastest is chosen within otherwise (default: the
    runtime's choice; ``run_threads`` is the count used); ``verify``: check the artifact's sha256 before
    loading it. ``choice`` records what was chosen and why (``speed_profile.Choice``).
    """

    def __init__(self, path: Path | str, target: str | None = None, threads: int | None = None,
                 top_k: int = 3, verify: bool = True, choose: str = CHOOSE_FASTEST) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise BundleError(f"{self.path}: no such bundle folder")
        if threads is not None and threads < 1:
            raise BundleError(f"--threads {threads}: must be at least 1")
        if top_k < 1:
            raise BundleError(f"--top-k {top_k}: must be at least 1")
        if choose not in CHOOSE:
            raise BundleError(f"--choose {choose}: expected one of {', '.join(CHOOSE)}")
        try:
            register_extra_runners()
            self.manifest = Manifest.load(self.path)
        except (ManifestError, ExtraRunnerError) as exc:
            raise BundleError(str(exc)) from None
        self.threads = threads
        self.run_threads = threads
        self.verify = verify
        probed = None
        if target is not None or choose == CHOOSE_ORDER:
            self.target = choose_target(self.manifest, target)
            self.choice = speed.Choice(self.target.name, speed.HOW_TARGET if target is not None else speed.HOW_ORDER,
                                       notes=[] if target is not None else passed_over(self.manifest), threads=threads)
        if not self.manifest.tokenizer:
            raise BundleError(f"{self.path}: the bundle has no tokenizer (manifest 'tokenizer' is empty)")
        try:
            self.decoder = decoder_for(self.manifest.task, self.manifest.labels, top_k=top_k,
                                       thresholds=self.manifest.label_thresholds)
            self.tokenizer = BundleTokenizer.from_dir(self.path / self.manifest.tokenizer,
                                                      padding_side=self.manifest.input_spec.padding_side)
        except (DecoderError, TokenizerError) as exc:
            raise BundleError(str(exc)) from None
        if target is None and choose == CHOOSE_FASTEST:  # after the cheap checks: the probe loads artifacts
            self.target, self.choice, probed = self._fastest()
            self.run_threads = self.choice.threads
        if verify and probed is None:
            self._verify(self.target)
        self.input_names = [spec.name for spec in self.manifest.input_spec.inputs]
        self.runner = probed if probed is not None else self._load_runner()

    def _verify(self, entry: TargetEntry) -> None:
        problems = verify_files(self.path, _only(self.manifest, entry))
        if problems:
            raise BundleError(f"{self.path}: {problems[0]}")

    def _fastest(self) -> tuple[TargetEntry, speed.Choice, Runner | None]:
        """The fastest verified artifact here: the stored profile's, else the probe's (stored for next time).
        Returns the probe's loaded runner of the winner too (None: load it)."""
        installed = device_runtimes()
        family = int8_kernel_family()
        usable = {t.name: t for t in verified_here(self.manifest, installed, family)}
        notes = passed_over(self.manifest, family)
        thread_options = speed.thread_options(self.threads)
        if not usable or (len(usable) == 1 and len(thread_options) == 1):  # nothing to compare (or nothing
            entry = next(iter(usable.values()), None) or choose_target(self.manifest, None, installed)  # verified)
            return entry, speed.Choice(entry.name, speed.HOW_ONLY if usable else speed.HOW_ORDER, notes=notes,
                                       threads=self.threads), None
        candidates = probe_candidates(self.manifest, installed)
        fields = speed.speed_fingerprint(self.threads)
        key, bundle_id = speed.device_key(fields), speed.bundle_identity(self.manifest)
        profile = speed.load_profile(bundle_id, key, notes)  # a bench's measured every artifact, torch's too
        if profile is not None and profile.chosen in usable and speed.covers(profile, [t.name for t in candidates]):
            return usable[profile.chosen], speed.Choice(profile.chosen, speed.HOW_PROFILE, key, profile,
                                                        str(speed.profile_path(bundle_id, key)), notes,
                                                        threads=profile.chosen_threads), None
        if len(candidates) == 1 and (len(thread_options) == 1 or candidates[0].runtime in TORCH_RUNTIMES):
            # one artifact to time: the probe compares thread counts, but would not load torch for that
            return candidates[0], speed.Choice(candidates[0].name, speed.HOW_ONLY, key, notes=notes,
                                               threads=self.threads), None
        feeds = speed.probe_feeds(self.path, self.manifest)
        if not feeds:
            entry = choose_target(self.manifest, None, installed)
            notes.append(f"no sample rows to probe with ({self.manifest.samples or 'no samples file'}): fixed order")
            return entry, speed.Choice(entry.name, speed.HOW_ORDER, key, notes=notes, threads=self.threads), None
        runners: dict[speed.Candidate, tuple[TargetEntry, Runner]] = {}
        excluded: dict[str, str] = {}
        for entry in candidates:
            if self.verify:  # a tampered artifact is refused, as when it is the one asked for
                self._verify(entry)
            for threads in thread_options:
                try:  # idle workers asleep: a spinning one takes a core from the runner timed after it
                    runners[(entry.name, threads)] = (entry, self._load_runner(entry, threads, spin=False))
                except BundleError as exc:
                    excluded[entry.name] = str(exc)
                    break
        speeds, failed = speed.probe(runners, feeds)
        excluded.update(failed)
        if not speeds:
            speed.release(runners, None)
            raise BundleError("no artifact of this bundle ran here: "
                              + "; ".join(f"{name}: {why}" for name, why in excluded.items()))
        profile = speed.new_profile(self.manifest, fields, speed.SOURCE_PROBE, speeds, excluded)
        winner = (profile.chosen, profile.chosen_threads)
        # a winner whose runtime spins is loaded again with its workers spinning, as the app runs it
        runner = speed.release(runners, None if runners[winner][1].spins else winner)
        path = speed.save_profile(profile, notes)
        return (self.manifest.target(profile.chosen),
                speed.Choice(profile.chosen, speed.HOW_PROBE, key, profile, str(path) if path else None, notes,
                             threads=profile.chosen_threads), runner)

    def _load_runner(self, entry: TargetEntry | None = None, threads: int | None = None,
                     spin: bool = True) -> Runner:
        entry = entry or self.target
        threads = self.run_threads if threads is None else threads
        try:
            return load_target(self.path, self.manifest, entry.name, threads=threads, spin=spin)
        except RunnerUnavailable as exc:
            raise BundleError(f"target {entry.name}: {exc}") from None
        except (OSError, ValueError, RuntimeError) as exc:
            raise BundleError(f"target {entry.name}: cannot load {entry.file} "
                              f"({str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__})") from None

    def tokenize(self, texts: list[str]) -> list[TokenizedText]:
        return self.tokenizer.tokenize(texts, max_tokens(self.manifest, self.target))

    def inputs_for(self, tokens: TokenizedText) -> dict[str, np.ndarray]:
        """The artifact's inputs for one text: padded to ``shape_for_length``, in the manifest's input order."""
        padded = self.tokenizer.pad(tokens, shape_for_length(self.manifest, self.target, tokens.n_tokens))
        return {name: padded[name] for name in self.input_names}

    def _run(self, tokenized: list[TokenizedText]) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """Each text's raw output and padded inputs; a runner that takes raw text (MediaPipe Tasks) gets the
        texts themselves and tokenizes them with the vocabulary packed in its artifact."""
        inputs = [self.inputs_for(t) for t in tokenized]
        if getattr(self.runner, "takes_text", False):
            outputs = self.runner.run_texts([t.text for t in tokenized])
            return [(outputs[i:i + 1], feed) for i, feed in enumerate(inputs)]
        if not _takes_length(type(self.runner)):  # a device owner's runner (EDGEPACK_EXTRA_RUNNERS) may take inputs only
            return [(self.runner.run(feed), feed) for feed in inputs]
        # each feed is already padded to the length this bundle runs it at: the runner need not work it out again
        return [(self.runner.run(feed, length=next(iter(feed.values())).shape[-1]), feed) for feed in inputs]

    def outputs(self, texts: list[str]) -> np.ndarray:
        """The artifact's raw float32 outputs, one row per text ([N, D])."""
        return np.concatenate([output for output, _ in self._run(self.tokenize(_texts(texts)))], axis=0)

    def predict(self, texts: list[str] | str) -> list[Prediction]:
        """One prediction per text, in order: label/score/top-k for classification, the embedding for
        feature-extraction."""
        tokenized = self.tokenize(_texts(texts))
        return [self.decoder.decode(output, tokens, feed["attention_mask"])
                for tokens, (output, feed) in zip(tokenized, self._run(tokenized))]


@functools.lru_cache(maxsize=None)
def _takes_length(runner_type: type) -> bool:
    """Whether the runner class's ``run`` accepts ``length`` (the base runner's does; an override may not)."""
    import inspect

    try:
        return "length" in inspect.signature(runner_type.run).parameters
    except (TypeError, ValueError):
        return False


def _texts(texts: list[str] | str) -> list[str]:
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise BundleError("no texts to run")
    bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
    if bad:
        raise BundleError(f"texts must be strings, got {bad[0]}")
    return texts


def _only(manifest: Manifest, entry: TargetEntry) -> Manifest:
    return dataclasses.replace(manifest, targets=[entry])
