"""USAGE.md: how an app loads this bundle, generated from its manifest.

With a ``mediapipe-text`` artifact the app needs no tokenizer, padding, pooling or label code of its own:
MediaPipe Tasks (Android, iOS, web) take the raw text. The snippets below are filled in from the manifest (the
file name, the labels, the embedding size, the token limit, the prompt), so they cannot drift from the bundle.
The JavaScript one is a self-contained ES module (``javascript_module``) that the browser test runs as is.
"""
from __future__ import annotations

import json
from pathlib import Path

from device_bench.manifest import STATUS_OK, Manifest
from device_bench.runners.mediapipe import STRIP_ACCENTS

USAGE_NAME = "USAGE.md"
MEDIAPIPE_TARGET = "mediapipe-text"
#: the npm package and version the JavaScript snippet imports (MediaPipe Tasks for the web)
TASKS_TEXT_NPM = "@mediapipe/tasks-text"
TASKS_TEXT_VERSION = "1.0.1"
WASM_URL = f"https://cdn.jsdelivr.net/npm/{TASKS_TEXT_NPM}@{TASKS_TEXT_VERSION}/wasm"
JS_FENCE = "```javascript"


def _mediapipe_file(manifest: Manifest) -> str | None:
    entry = next((t for t in manifest.targets if t.name == MEDIAPIPE_TARGET and t.status == STATUS_OK), None)
    return entry.file if entry is not None else None


def _strips_accents(manifest: Manifest) -> bool:
    """Whether the app strips accents before MediaPipe (the model's tokenizer does, MediaPipe's does not)."""
    entry = next((t for t in manifest.targets if t.name == MEDIAPIPE_TARGET), None)
    return bool(entry and entry.details.get("text_normalization") == STRIP_ACCENTS)


#: per language: the line that strips accents as the model's tokenizer does (NFD, combining marks dropped)
STRIP_LINES = {
    "kotlin": 'val input = java.text.Normalizer.normalize(text, java.text.Normalizer.Form.NFD).replace(Regex("\\\\p{Mn}+"), "")',
    "swift": "let input = String(String.UnicodeScalarView(text.decomposedStringWithCanonicalMapping.unicodeScalars\n"
             "    .filter { $0.properties.generalCategory != .nonspacingMark }))",
    "javascript": 'const input = text.normalize("NFD").replace(/\\p{Mn}/gu, "");',
}


def _input_line(manifest: Manifest, language: str, indent: str = "") -> tuple[str, str]:
    """(the line that prepares ``text``, the name to pass to MediaPipe): the accent stripping, or nothing."""
    if not _strips_accents(manifest):
        return "", "text"
    comment = f"{indent}// the model's tokenizer strips accents, MediaPipe's does not: strip them first\n"
    return comment + indent + STRIP_LINES[language].replace("\n", "\n" + indent) + "\n", "input"


def _is_classifier(manifest: Manifest) -> bool:
    return bool(manifest.labels)


def _width(manifest: Manifest) -> int:
    return int(manifest.input_spec.outputs[0].shape[-1])


def javascript_module(manifest: Manifest) -> str | None:
    """The ES module for @mediapipe/tasks-text: ``embed(model, text)`` or ``classify(model, text)``; ``model`` is
    the artifact's URL or its bytes. None when the bundle has no MediaPipe artifact."""
    file = _mediapipe_file(manifest)
    if file is None:
        return None
    spec = manifest.input_spec
    prompt = f"\n// Prepend the model's prompt to every text: {json.dumps(spec.prompt)}" if spec.prompt else ""
    head = f"""// {file}: {manifest.model.source}, {manifest.task}; texts longer than {spec.seq_len} tokens are cut.{prompt}
import {{ FilesetResolver, {'TextClassifier' if _is_classifier(manifest) else 'TextEmbedder'} }} from "{TASKS_TEXT_NPM}";

const WASM = "{WASM_URL}";

function baseOptions(model) {{
  if (typeof model === "string") return {{ modelAssetPath: model }};
  return {{ modelAssetBuffer: model instanceof Uint8Array ? model : new Uint8Array(model) }};
}}

// one task per model, created on first use: loading it costs far more than running a text
const loaded = new Map();

function task(model, wasm, create) {{
  if (!loaded.has(model)) loaded.set(model, FilesetResolver.forTextTasks(wasm).then((fileset) => create(fileset)));
  return loaded.get(model);
}}

/** Frees every loaded model (their WASM memory). */
export async function release() {{
  for (const loading of loaded.values()) (await loading).close();
  loaded.clear();
}}
"""
    prepare, name = _input_line(manifest, "javascript", "  ")
    if _is_classifier(manifest):
        labels = json.dumps(manifest.labels)
        body = f"""
export const LABELS = {labels};

/** Every label's score for `text`, best first: [{{label, score}}]. `model`: the URL of {file} or its bytes. */
export async function classify(model, text, wasm = WASM) {{
  const classifier = await task(model, wasm, (fileset) => TextClassifier.createFromOptions(fileset, {{
    baseOptions: baseOptions(model), maxResults: -1,
  }}));
{prepare}  const categories = classifier.classify({name}).classifications[0].categories;
  return categories.map((c) => ({{ label: c.categoryName, score: c.score }}));
}}
"""
    else:
        body = f"""
export const EMBEDDING_SIZE = {_width(manifest)};

/** The embedding of `text` ({_width(manifest)} floats{', L2-normalized by the model' if spec.normalize else ''}). `model`: the URL of {file} or its bytes. */
export async function embed(model, text, wasm = WASM) {{
  const embedder = await task(model, wasm, (fileset) => TextEmbedder.createFromOptions(fileset, {{
    baseOptions: baseOptions(model), l2Normalize: false, quantize: false,
  }}));
{prepare}  return Array.from(embedder.embed({name}).embeddings[0].floatEmbedding);
}}
"""
    return head + body


def _kotlin(manifest: Manifest, file: str) -> str:
    prepare, name = _input_line(manifest, "kotlin")
    if _is_classifier(manifest):
        return f"""```kotlin
import com.google.mediapipe.tasks.core.BaseOptions
import com.google.mediapipe.tasks.text.textclassifier.TextClassifier

val classifier = TextClassifier.createFromOptions(
    context,
    TextClassifier.TextClassifierOptions.builder()
        .setBaseOptions(BaseOptions.builder().setModelAssetPath("{file}").build())  // in src/main/assets
        .setMaxResults({len(manifest.labels or [])})
        .build())
{prepare}val top = classifier.classify({name}).classificationResult().classifications()[0].categories()[0]
// top.categoryName(): one of {_label_list(manifest)}; top.score(): {_score_meaning(manifest)}
```"""
    return f"""```kotlin
import com.google.mediapipe.tasks.core.BaseOptions
import com.google.mediapipe.tasks.text.textembedder.TextEmbedder

val embedder = TextEmbedder.createFromOptions(
    context,
    TextEmbedder.TextEmbedderOptions.builder()
        .setBaseOptions(BaseOptions.builder().setModelAssetPath("{file}").build())  // in src/main/assets
        .setL2Normalize(false).setQuantize(false)  // the model pools and normalizes itself
        .build())
{prepare}val embedding: FloatArray = embedder.embed({name}).embeddingResult().embeddings()[0].floatEmbedding()  // {_width(manifest)} floats
```"""


def _swift(manifest: Manifest, file: str) -> str:
    prepare, name = _input_line(manifest, "swift")
    stem, suffix = file.rsplit(".", 1)
    path = f'let modelPath = Bundle.main.path(forResource: "{stem}", ofType: "{suffix}")!'
    if _is_classifier(manifest):
        return f"""```swift
import MediaPipeTasksText  // pod 'MediaPipeTasksText'

{path}
let options = TextClassifierOptions()
options.baseOptions.modelAssetPath = modelPath
options.maxResults = {len(manifest.labels or [])}
let classifier = try TextClassifier(options: options)
{prepare}let top = try classifier.classify(text: {name}).classificationResult.classifications[0].categories[0]
// top.categoryName: one of {_label_list(manifest)}; top.score: {_score_meaning(manifest)}
```"""
    return f"""```swift
import MediaPipeTasksText  // pod 'MediaPipeTasksText'

{path}
let options = TextEmbedderOptions()
options.baseOptions.modelAssetPath = modelPath
options.l2Normalize = false  // the model pools and normalizes itself
options.quantize = false
let embedder = try TextEmbedder(options: options)
{prepare}let embedding = try embedder.embed(text: {name}).embeddingResult.embeddings[0].floatEmbedding  // {_width(manifest)} floats
```"""


def _label_list(manifest: Manifest) -> str:
    return ", ".join(json.dumps(label) for label in manifest.labels or [])


def _score_meaning(manifest: Manifest) -> str:
    if manifest.input_spec.output_activation == "sigmoid":
        return "the label's sigmoid score (the label applies at or above its threshold below)"
    return "the raw logit (MediaPipe applies no softmax; the highest is the prediction)"


def usage_markdown(manifest: Manifest) -> str:
    spec = manifest.input_spec
    lines = ["# Using this bundle", "",
             f"Model: `{manifest.model.source}` ({manifest.model.model_type}), task `{manifest.task}`.", ""]
    file = _mediapipe_file(manifest)
    if file is None:
        lines += [f"This bundle has no MediaPipe artifact: pack with `--targets ...,{MEDIAPIPE_TARGET}` for one that "
                  "MediaPipe Tasks load as is (raw text in, tokenizer and labels inside the file). The artifacts "
                  f"below take token ids: tokenize with the `{manifest.tokenizer}/` folder, right-pad to "
                  f"{spec.seq_len} tokens, feed {', '.join(t.name for t in spec.inputs)} as int32.", ""]
    else:
        entry = manifest.target(MEDIAPIPE_TARGET)
        kind = "TextClassifier" if _is_classifier(manifest) else "TextEmbedder"
        facts = [f"- `{file}` ({entry.precision}, {entry.size_bytes} bytes): MediaPipe Tasks {kind}; raw text in, "
                 + ("the WordPiece vocabulary and the labels are" if _is_classifier(manifest)
                                           else "the WordPiece vocabulary is") + " inside the file (TFLite Metadata).",
                 f"- Input limit: {spec.seq_len} tokens (with [CLS] and [SEP]); longer texts are cut."]
        if spec.prompt:
            facts.append(f"- Prepend the model's prompt to every text: `{spec.prompt}`.")
        if _strips_accents(manifest):
            facts.append("- Strip accents before MediaPipe (NFD, combining marks dropped): the model's tokenizer "
                         "does, MediaPipe's does not (`café` would become [UNK]); each snippet does it in one line.")
        if _is_classifier(manifest):
            facts.append(f"- Labels, in index order: {_label_list(manifest)}.")
            if manifest.label_thresholds:
                facts.append("- Thresholds per label: " + ", ".join(
                    f"{label} {t:g}" for label, t in zip(manifest.labels or [], manifest.label_thresholds)))
        else:
            facts.append(f"- Embedding: {_width(manifest)} floats, {spec.pooling or 'pooled'} pooling"
                         + (", L2-normalized (cosine similarity = dot product)" if spec.normalize else "") + ".")
        if entry.parity is not None:
            p = entry.parity
            measured = (f"mean cosine {p.mean_cosine:.4f}" if not _is_classifier(manifest) and p.mean_cosine is not None
                        else f"top-1 agreement {p.top1_agreement:.4f}" if p.top1_agreement is not None else "")
            if measured:
                facts.append(f"- Verified at pack time through MediaPipe's Python Tasks API on {p.n_samples} texts: "
                             f"{measured} against {manifest.parity_reference}.")
        lines += facts + ["", "## Android (Kotlin, `com.google.mediapipe:tasks-text`)", "", _kotlin(manifest, file), "",
                          "## iOS (Swift, CocoaPods `MediaPipeTasksText`)", "", _swift(manifest, file), "",
                          f"## Web (JavaScript, npm `{TASKS_TEXT_NPM}`)", "",
                          "An ES module; `model` is the file's URL or its bytes (`Uint8Array` / `ArrayBuffer`), "
                          "`wasm` the folder of MediaPipe's WebAssembly files (default: the CDN).", "",
                          JS_FENCE, javascript_module(manifest).rstrip(), "```", ""]
    lines += ["## Files", "", "| target | file | runtime | precision | status |", "|---|---|---|---|---|"]
    for t in manifest.targets:
        lines.append(f"| {t.name} | {t.file or '-'} | {t.runtime_requirement or t.runtime} | {t.precision or '-'} "
                     f"| {t.status} |")
    return "\n".join(lines) + "\n"


def write_usage(manifest: Manifest, bundle_dir: Path) -> Path:
    path = Path(bundle_dir) / USAGE_NAME
    path.write_text(usage_markdown(manifest), encoding="utf-8")
    return path
