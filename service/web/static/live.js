// Live figures of one model over the last minute, from the server's own metrics: this page reads GET /metrics every
// two seconds and compares the newest reading with the oldest one of the last minute. "Send 200 at once" fires
// 200 /predict requests together; the batch sizes the server reports then show dynamic batching at work.
import { api, fetchBlob, paths, postFiles, postJSON } from "./api.js";
import { bars, facts, h, replace } from "./dom.js";
import { buckets, difference, distribution, parseMetrics, quantile, total } from "./prom.js";
import { errorBox } from "./results.js";

const PERIOD_MS = 2000;
const WINDOW_MS = 60000;
const readings = []; // {at, samples}
const listeners = new Set();
let timer = null;
let lastError = null;

async function scrape() {
  try {
    const response = await fetch("metrics");
    if (!response.ok) throw new Error(`GET metrics: ${response.status}`);
    const samples = parseMetrics(await response.text());
    const at = performance.now();
    readings.push({ at, samples });
    while (readings.length > 2 && at - readings[1].at >= WINDOW_MS) readings.shift();
    lastError = null;
  } catch (error) {
    lastError = error;
  }
  for (const listener of listeners) listener();
}

export function startCollecting() {
  if (timer === null) {
    scrape();
    timer = setInterval(scrape, PERIOD_MS);
  }
}

export function liveView(card, signal) {
  const figures = h("div", { class: "live-figures", "aria-live": "polite" });
  const burst = h("div", { class: "burst", "aria-live": "polite" });
  const model = { model: card.name };
  const render = () => {
    if (lastError) {
      replace(figures, errorBox({ code: "metrics", message: String(lastError.message || lastError) }, "reading /metrics"));
      return;
    }
    if (readings.length < 2) {
      replace(figures, h("p", { class: "muted" }, "Collecting: figures appear after two readings of /metrics."));
      return;
    }
    const newest = readings[readings.length - 1];
    const oldest = readings[0];
    const seconds = (newest.at - oldest.at) / 1000;
    const delta = (name, where) => Math.max(0, total(newest.samples, name, model, where) - total(oldest.samples, name, model, where));
    const requests = delta("nnserve_requests_total");
    const failed = delta("nnserve_requests_total", (s) => s.labels.outcome !== "success");
    const latency = difference(buckets(newest.samples, "nnserve_request_latency_seconds", model),
      buckets(oldest.samples, "nnserve_request_latency_seconds", model));
    const sizes = difference(buckets(newest.samples, "nnserve_batch_size", model),
      buckets(oldest.samples, "nnserve_batch_size", model));
    const batches = sizes.get(Infinity) || 0;
    const rows = delta("nnserve_batch_size_sum");
    const ms = (q) => { const v = quantile(q, latency); return v === null ? "—" : `${(v * 1000).toFixed(2)} ms`; };
    const counts = distribution(sizes).filter((row) => row.count > 0);
    const most = Math.max(1, ...counts.map((row) => row.count));
    replace(figures,
      h("p", { class: "window" }, `Over the last ${Math.round(seconds)} s`, seconds < WINDOW_MS / 1000 - 5
        ? " (since this page began reading /metrics; then the last minute)" : "",
      `, all served versions of ${card.name}:`),
      facts([["requests/s", (requests / seconds).toFixed(1)], ["failed requests/s", (failed / seconds).toFixed(1)],
        ["p50 latency", ms(0.5)], ["p99 latency", ms(0.99)], ["batches computed", batches.toLocaleString("en")],
        ["mean batch size", batches ? (rows / batches).toFixed(2) : "—"],
        ["queued now", total(newest.samples, "nnserve_queue_depth", model)],
        ["requests in flight now", total(newest.samples, "nnserve_in_flight_requests", model)]]),
      h("h4", {}, "Batch sizes (batches per size range)"),
      counts.length ? bars(counts.map((row) => ({ label: row.range, value: row.count / most, text: String(row.count) })),
        { className: "batch-sizes" }) : h("p", { class: "muted" }, "No batch computed in this window."),
      h("p", { class: "muted" }, "Latency inside the server, estimated from its histogram's buckets as Prometheus's "
        + "histogram_quantile does; sizes from nnserve_batch_size."));
  };
  listeners.add(render);
  signal.addEventListener("abort", () => listeners.delete(render));
  render();

  const button = h("button", { type: "button", class: "primary send-burst" }, "Send 200 at once");
  button.addEventListener("click", async () => {
    button.disabled = true;
    replace(burst, "Preparing…");
    try {
      const send = await requestMaker(card);
      const start = performance.now();
      const results = await Promise.allSettled(Array.from({ length: 200 }, () => send()));
      const ms = performance.now() - start;
      const failures = results.filter((r) => r.status === "rejected");
      const codes = [...new Set(failures.map((r) => `${r.reason.status} ${r.reason.code}`))];
      replace(burst, h("p", { class: "burst-result" }, `200 requests answered in ${ms.toFixed(0)} ms: `
        + `${200 - failures.length} succeeded${failures.length ? `, ${failures.length} failed (${codes.join(", ")})` : ""}.`),
      failures.length ? errorBox(failures[0].reason, "one of the 200 requests") : null);
      await scrape();
    } catch (error) {
      replace(burst, errorBox(error, "preparing the 200 requests"));
    } finally {
      button.disabled = false;
    }
  });
  return h("div", { class: "live" }, figures, h("div", { class: "burst-box" }, button,
    h("p", { class: "muted" }, "Fires 200 /predict requests at once, each one input. A browser opens at most six "
      + "connections to one server, so about six are in flight at a time: what arrives while a batch computes joins the "
      + "next one, and the batch sizes above move past 1."), burst));
}

// A function that sends one /predict request for this model: a published sample, else the signature's example.
async function requestMaker(card) {
  const body = await api(paths.samples(card.name, card.version));
  const sample = body.samples[0];
  const fields = { model: card.name, version: card.version };
  if (body.kind === "image") {
    if (!sample) throw new Error("this model publishes no test image to send");
    const file = await fetchBlob(sample.url, sample.file);
    return () => postFiles("predict", fields, [file]);
  }
  if (!sample) throw new Error("this model publishes no sample to send");
  const inputs = body.kind === "sequence" ? [sample.inputs]
    : Object.fromEntries(Object.entries(sample.inputs).map(([name, t]) => [name, t.value]));
  return () => postJSON("predict", { ...fields, inputs });
}
