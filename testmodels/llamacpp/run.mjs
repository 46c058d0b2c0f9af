// Runs real llama.cpp (the prebuilt library of npm node-llama-cpp) for
// lqc's interop tests. Reads a JSON list of jobs on stdin, writes one JSON
// result per job on stdout:
//   job:    {"model": PATH, "prompt": [ids] | null (BOS only), "n": N}
//   result: {"model": PATH, "tokens": [ids], "text": "..."} or {"model": PATH, "error": "..."}
// A job may add "lora": [{"path": P, "scale": S}] to run with LoRA adapters,
// and "f32": true for a float32 KV cache without flash attention (so that
// llama.cpp's own float16 rounding does not hide small differences).
// A job with "logits": true evaluates the prompt (teacher-forced) and
// answers {"model": PATH, "logits": [[...vocab] per position]}: the raw
// logits after every prompt token.
// A job with "bench": {"pp": P, "tg": G, "threads": T, "reps": R} instead
// times prompt processing of P tokens as one batch and the generation of
// G tokens, like llama-bench's ppP and tgG, and answers
//   {"model": PATH, "pp_ms": [...], "tg_ms": [...]}, one entry per repetition.
import {getLlama} from "node-llama-cpp";

const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const jobs = JSON.parse(Buffer.concat(chunks).toString("utf8"));

// One thread: with more, llama.cpp's workers spin against each other on a
// small shared machine and a 260K-parameter model takes minutes.
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
for (const job of jobs) {
  if (job.bench) {
    try {
      process.stdout.write(JSON.stringify(await bench(job)) + "\n");
    } catch (e) {
      process.stdout.write(JSON.stringify({model: job.model, error: String(e?.message ?? e)}) + "\n");
    }
    continue;
  }
  if (job.logits) {
    try {
      process.stdout.write(JSON.stringify(await logits(job)) + "\n");
    } catch (e) {
      process.stdout.write(JSON.stringify({model: job.model, error: String(e?.message ?? e)}) + "\n");
    }
    continue;
  }
  try {
    const model = await llama.loadModel({modelPath: job.model});
    const ctx = await model.createContext({contextSize: Math.max(64, (job.prompt?.length ?? 1) + job.n + 8), threads: 1, lora: loraOf(job), ...precision(job)});
    const seq = ctx.getSequence();
    const prompt = job.prompt ?? [model.tokens.bos];
    const out = [];
    if (job.n > 0) {
      for await (const tok of seq.evaluate(prompt, {temperature: 0})) {
        out.push(tok);
        if (out.length >= job.n) break;
      }
    }
    process.stdout.write(JSON.stringify({model: job.model, tokens: out, text: model.detokenize(out)}) + "\n");
    await ctx.dispose();
    await model.dispose();
  } catch (e) {
    process.stdout.write(JSON.stringify({model: job.model, error: String(e?.message ?? e)}) + "\n");
  }
}

async function bench(job) {
  const {pp, tg, threads, reps} = job.bench;
  const model = await llama.loadModel({modelPath: job.model});
  const ctx = await model.createContext({contextSize: Math.max(pp, tg) + 16, batchSize: pp, threads});
  const seq = ctx.getSequence();
  const vocab = model.tokens.eos + 1;
  const prompt = Array.from({length: pp}, (_, i) => 1 + (i * 7919) % 1000);
  const res = {model: job.model, pp_ms: [], tg_ms: []};
  for (let r = 0; r <= reps; r++) { // the first round warms up
    await seq.clearHistory();
    let t0 = performance.now();
    await seq.evaluateWithoutGeneratingNewTokens(prompt);
    const ppMs = performance.now() - t0;
    await seq.clearHistory();
    let n = 0;
    t0 = performance.now();
    for await (const tok of seq.evaluate([model.tokens.bos], {temperature: 0})) {
      if (++n >= tg) break;
    }
    const tgMs = performance.now() - t0;
    if (r > 0) { res.pp_ms.push(ppMs); res.tg_ms.push(tgMs); }
  }
  await ctx.dispose();
  await model.dispose();
  return res;
}

async function logits(job) {
  const model = await llama.loadModel({modelPath: job.model});
  const ctx = await model.createContext({contextSize: job.prompt.length + 8, batchSize: job.prompt.length, threads: 1, lora: loraOf(job), ...precision(job)});
  const seq = ctx.getSequence();
  const input = job.prompt.map((t) => [t, {generateNext: {logits: true}}]);
  const out = await seq.controlledEvaluate(input);
  const res = {model: job.model, logits: []};
  for (const o of out) {
    const row = new Array(o.next.logits.size).fill(0);
    for (const [tok, v] of o.next.logits) row[tok] = v;
    res.logits.push(row);
  }
  await ctx.dispose();
  await model.dispose();
  return res;
}

function loraOf(job) {
  if (!job.lora?.length) return undefined;
  return {adapters: job.lora.map((a) => ({filePath: a.path, scale: a.scale ?? 1}))};
}

function precision(job) {
  if (!job.f32) return {};
  return {experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32", flashAttention: false};
}
