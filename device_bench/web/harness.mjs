// The browser side of edgepack's browser device: runs one web artifact of a bundle on texts and hands back,
// per text, the raw float32 output (embedding or logits), the token ids it fed, and the inference time.
// Everything is served from loopback by device_bench/web/browser.py: the bundle under /bundle/, this folder
// (with its node_modules) under /web/. Nothing is fetched from anywhere else.
//
// Two kinds of artifact:
//   onnx:      onnxruntime-web (WASM, SIMD; threads when the page is cross-origin isolated) + the bundle's
//              tokenizer.json through @huggingface/tokenizers (transformers.js's tokenizer);
//   mediapipe: @mediapipe/tasks-text's TextEmbedder / TextClassifier on the .tflite with TFLite Metadata
//              (the tokenizer travels inside the model file).
// Each kind imports its own runtime when first asked for, so one missing package fails only that kind.
const ORT = "/web/node_modules/onnxruntime-web/dist/ort.wasm.min.mjs";
const TOKENIZERS = "/web/node_modules/@huggingface/tokenizers/dist/tokenizers.min.mjs";
const TASKS_TEXT = "/web/node_modules/@mediapipe/tasks-text/text_bundle.mjs";

async function fetchJson(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

async function fetchOptionalJson(url) {
  const response = await fetch(url);
  return response.ok ? response.json() : {};
}

// The ids the device side feeds: special tokens added, cut to maxTokens the way HF `tokenizers` truncates a
// single text on the right (the content is cut, the closing special token kept).
function tokenIds(tokenizer, text, maxTokens) {
  const ids = tokenizer.encode(text).ids.map(Number);
  if (ids.length <= maxTokens) return ids;
  return [...ids.slice(0, maxTokens - 1), ids[ids.length - 1]];
}

function tensorFor(ort, dtype, values, length) {
  if (dtype === "int64") return new ort.Tensor("int64", BigInt64Array.from(values, BigInt), [1, length]);
  if (dtype === "int32") return new ort.Tensor("int32", Int32Array.from(values), [1, length]);
  throw new Error(`input dtype ${dtype} is not supported by the browser harness`);
}

function now() {
  return performance.now();
}

async function runOnnx(job) {
  const ort = await import(ORT);
  const { Tokenizer } = await import(TOKENIZERS);
  ort.env.wasm.wasmPaths = "/web/node_modules/onnxruntime-web/dist/";
  // threads need SharedArrayBuffer, which only a cross-origin isolated page has (browser.py serves it with COOP/COEP);
  // 0 lets onnxruntime-web choose (half the cores, at most 4)
  ort.env.wasm.numThreads = self.crossOriginIsolated ? job.threads : 1;
  ort.env.wasm.simd = true;
  const t0 = now();
  const [tokenizerJson, tokenizerConfig] = await Promise.all([
    fetchJson(`/bundle/${job.tokenizer}/tokenizer.json`),
    fetchOptionalJson(`/bundle/${job.tokenizer}/tokenizer_config.json`),
  ]);
  const tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);
  const session = await ort.InferenceSession.create(`/bundle/${job.file}`, { executionProviders: ["wasm"] });
  const loadMs = now() - t0;
  const inputs = job.inputs;  // [{name, dtype}] in the manifest's order: input_ids, attention_mask
  const rows = [];
  for (const text of job.texts) {
    const ids = tokenIds(tokenizer, text, job.max_tokens);
    const feeds = {};
    for (const spec of inputs) {
      const values = spec.name === "attention_mask" ? ids.map(() => 1) : spec.name === "token_type_ids" ? ids.map(() => 0) : ids;
      feeds[spec.name] = tensorFor(ort, spec.dtype, values, ids.length);
    }
    const times = [];
    let output = null;
    for (let r = 0; r < job.warmup + job.runs; r++) {
      const start = now();
      const result = await session.run(feeds);
      const elapsed = now() - start;
      if (r >= job.warmup) times.push(elapsed);
      output = result[session.outputNames[0]];
    }
    rows.push({ ids, output: Array.from(output.data, Number), ms: times });
  }
  await session.release();
  return { rows, load_ms: loadMs, threads: ort.env.wasm.numThreads, cross_origin_isolated: self.crossOriginIsolated,
    hardware_concurrency: navigator.hardwareConcurrency };
}

async function runMediapipe(job) {
  const { FilesetResolver, TextEmbedder, TextClassifier } = await import(TASKS_TEXT);
  const t0 = now();
  const fileset = await FilesetResolver.forTextTasks("/web/node_modules/@mediapipe/tasks-text/wasm");
  const baseOptions = { modelAssetPath: `/bundle/${job.file}`, delegate: "CPU" };
  const classify = job.task !== "feature-extraction";
  const task = classify
    ? await TextClassifier.createFromOptions(fileset, { baseOptions, maxResults: -1 })
    : await TextEmbedder.createFromOptions(fileset, { baseOptions, l2Normalize: false, quantize: false });
  const loadMs = now() - t0;
  const rows = [];
  // "strip-accents": the model's tokenizer strips accents and MediaPipe's does not (HF BertNormalizer's rule)
  const prepare = job.normalization === "strip-accents" ? (t) => t.normalize("NFD").replace(/\p{Mn}/gu, "") : (t) => t;
  for (const raw of job.texts) {
    const text = prepare(raw);
    const times = [];
    let output = null;
    for (let r = 0; r < job.warmup + job.runs; r++) {
      const start = now();
      const result = classify ? task.classify(text) : task.embed(text);
      const elapsed = now() - start;
      if (r >= job.warmup) times.push(elapsed);
      if (classify) {  // the scores by class index (MediaPipe sorts them by score)
        const categories = result.classifications[0].categories;
        output = new Array(categories.length).fill(0);
        for (const c of categories) output[c.index] = c.score;
      } else {
        output = Array.from(result.embeddings[0].floatEmbedding);
      }
    }
    rows.push({ ids: null, output, ms: times });
  }
  task.close();
  return { rows, load_ms: loadMs, threads: 1, cross_origin_isolated: self.crossOriginIsolated,
    hardware_concurrency: navigator.hardwareConcurrency };
}

// "usage": the JavaScript snippet of the bundle's USAGE.md, imported as an app would import it, called once per
// text with the served model and the local WASM files; a classifier's [{label, score}] back in label order.
async function runUsage(job) {
  const snippet = await import(URL.createObjectURL(new Blob([job.module_source], { type: "text/javascript" })));
  const model = `/bundle/${job.file}`;
  const wasm = "/web/node_modules/@mediapipe/tasks-text/wasm";
  const rows = [];
  for (const text of job.texts) {
    const start = now();
    let output;
    if (snippet.embed) {
      output = await snippet.embed(model, text, wasm);
    } else {
      const scores = new Map((await snippet.classify(model, text, wasm)).map((s) => [s.label, s.score]));
      output = snippet.LABELS.map((label) => scores.get(label));
    }
    rows.push({ ids: null, output, ms: [now() - start] });
  }
  await snippet.release();
  return { rows, load_ms: 0, threads: 1, cross_origin_isolated: self.crossOriginIsolated,
    hardware_concurrency: navigator.hardwareConcurrency };
}

// The entry point the driver calls: job = {kind, file, tokenizer, task, inputs, max_tokens, texts, warmup, runs, threads}
window.edgepackRun = async (job) => {
  if (job.kind === "onnx") return runOnnx(job);
  if (job.kind === "mediapipe") return runMediapipe(job);
  if (job.kind === "usage") return runUsage(job);
  throw new Error(`unknown artifact kind ${job.kind}`);
};
window.edgepackReady = true;
