// Drives lqc serve with the official openai package, as an application
// would, printing one JSON object of what came back. Run it as
// LQC_CLIENT_CONFIG=JSON node --input-type=module < openai-client.mjs in
// the folder where openai is installed; CONFIG: {baseURL, apiKey, base,
// adapter, prompt, stop}.
import OpenAI from "openai";

const cfg = JSON.parse(process.env.LQC_CLIENT_CONFIG);
const client = new OpenAI({ baseURL: cfg.baseURL, apiKey: cfg.apiKey, maxRetries: 0 });
const out = {};

const models = await client.models.list();
out.models = models.data.map((m) => m.id);

const chat = await client.chat.completions.create({
  model: cfg.base, messages: [{ role: "system", content: "Tell a story." }, { role: "user", content: cfg.prompt }],
  max_tokens: 12, temperature: 0, logprobs: true, top_logprobs: 3,
});
out.chat = {
  content: chat.choices[0].message.content, role: chat.choices[0].message.role,
  finish: chat.choices[0].finish_reason, usage: chat.usage,
  logprobs: chat.choices[0].logprobs.content.length, top: chat.choices[0].logprobs.content[0].top_logprobs.length,
};

for (const model of [cfg.base, cfg.adapter]) {
  const c = await client.completions.create({ model, prompt: cfg.prompt, max_tokens: 24, temperature: 0 });
  out["completion:" + model] = { text: c.choices[0].text, finish: c.choices[0].finish_reason, usage: c.usage };
}

let streamed = "", finish = null, chunks = 0, usage = null;
const stream = await client.chat.completions.create({
  model: cfg.adapter, messages: [{ role: "user", content: cfg.prompt }], max_tokens: 16, temperature: 0,
  stream: true, stream_options: { include_usage: true },
});
for await (const chunk of stream) {
  chunks++;
  if (chunk.usage) usage = chunk.usage;
  for (const ch of chunk.choices) {
    streamed += ch.delta.content ?? "";
    finish = ch.finish_reason ?? finish;
  }
}
out.stream = { text: streamed, finish, chunks, usage };

let stext = "";
const cstream = await client.completions.create({
  model: cfg.base, prompt: cfg.prompt, max_tokens: 64, temperature: 0, stop: [cfg.stop], stream: true,
});
for await (const chunk of cstream) stext += chunk.choices[0]?.text ?? "";
out.completionStreamStop = stext;

const failure = async (f) => {
  try { await f(); return { status: 0 }; } catch (e) { return { status: e.status, type: e.type ?? e.error?.type, message: e.message }; }
};
out.unknownModel = await failure(() => client.chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: "x" }] }));
out.twoChoices = await failure(() => client.completions.create({ model: cfg.base, prompt: "x", n: 2 }));
out.badKey = await failure(() => new OpenAI({ baseURL: cfg.baseURL, apiKey: "wrong", maxRetries: 0 }).models.list());
console.log(JSON.stringify(out));
