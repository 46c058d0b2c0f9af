// Runs real llama.cpp (the prebuilt library of npm node-llama-cpp) for
// lqc's interop tests. Reads a JSON list of jobs on stdin, writes one JSON
// result per job on stdout:
//   job:    {"model": PATH, "prompt": [ids] | null (BOS only), "n": N}
//   result: {"model": PATH, "tokens": [ids], "text": "..."} or {"model": PATH, "error": "..."}
import {getLlama} from "node-llama-cpp";

const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const jobs = JSON.parse(Buffer.concat(chunks).toString("utf8"));

// One thread: with more, llama.cpp's workers spin against each other on a
// small shared machine and a 260K-parameter model takes minutes.
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
for (const job of jobs) {
  try {
    const model = await llama.loadModel({modelPath: job.model});
    const ctx = await model.createContext({contextSize: Math.max(64, (job.prompt?.length ?? 1) + job.n + 8), threads: 1});
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
