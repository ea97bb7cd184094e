// The model card: what the model is (config), what was measured of it (training report, when there is one), how
// it runs here (providers, batching, readiness), and what it lacks. Everything comes from GET
// /models/{name}/versions/{v} and /v2/models/{name}/versions/{v}/ready.
import { api, ApiError, paths } from "./api.js";
import { bars, facts, h, percent, shape } from "./dom.js";
import { errorBox } from "./results.js";

export function cardView(card) {
  const report = card.report || {};
  const sections = [
    h("p", { class: "description" }, card.description || "No description in its config."),
    readinessView(card),
    section("Inputs and outputs", tensorTable(card)),
    card.labels ? section(`Labels (${card.labels.length})`, h("ol", { class: "labels", start: "0" },
      card.labels.map((label) => h("li", {}, label)))) : null,
    card.accuracy ? section("Test accuracy", accuracyView(card.accuracy, report)) : null,
    report.parity ? section("Parity: PyTorch vs ONNX", parityView(report.parity)) : null,
    report.dataset ? section("Dataset", datasetView(report.dataset)) : null,
    report.training ? section("Training", trainingView(report.training)) : null,
    report.provenance ? section("Provenance", provenanceView(report.provenance)) : null,
    section("How it runs here", runtimeView(card)),
    card.preprocessing ? section("Preprocessing (/predict)", preprocessingView(card.preprocessing)) : null,
    card.lacks.length ? section("What this model does not have", h("ul", { class: "lacks" },
      card.lacks.map((text) => h("li", {}, text)))) : null,
    h("p", { class: "raw" }, "As JSON: ", h("a", { href: paths.version(card.name, card.version) }, "this card"), " · ",
      h("a", { href: paths.config(card.name, card.version) }, "Triton's config view")),
  ];
  return h("div", { class: "card" }, sections);
}

function section(title, ...body) {
  return h("section", { class: "card-section" }, h("h3", {}, title), body);
}

function readinessView(card) {
  const line = h("p", { class: "readiness" }, "Readiness: ", h("span", { class: "muted" }, "asking…"));
  api(paths.ready(card.name, card.version)).then(
    (body) => line.replaceChildren("Readiness: ", h("span", { class: "ok" }, body.ready ? "ready" : "not ready"),
      ` (${paths.ready(card.name, card.version)})`),
    (error) => line.replaceChildren("Readiness: ", errorBox(error instanceof ApiError ? error : new ApiError(0, "error", String(error)))),
  );
  return line;
}

function tensorTable(card) {
  const rows = [...card.inputs.map((t) => ["input", t]), ...card.outputs.map((t) => ["output", t])];
  return h("table", { class: "io" },
    h("thead", {}, h("tr", {}, ["", "name", "datatype", "shape"].map((c) => h("th", {}, c)))),
    h("tbody", {}, rows.map(([kind, t]) => h("tr", {}, h("td", {}, kind), h("td", {}, t.name),
      h("td", {}, t.datatype), h("td", { class: "shape" }, shape(t.shape))))),
    h("caption", {}, "? is an open axis (the first: the batch)"));
}

function accuracyView(accuracy, report) {
  const metrics = report.metrics || {};
  const perClass = Object.entries(accuracy.per_class || {});
  return [
    facts([["ONNX (served)", percent(accuracy.onnx_test, 2)], ["PyTorch", percent(accuracy.torch_test, 2)],
      ["validation", metrics.validation_accuracy === undefined ? null : percent(metrics.validation_accuracy, 2)],
      ["test samples", metrics.test_samples]]),
    perClass.length ? h("h4", {}, "Per class") : null,
    perClass.length ? bars(perClass.map(([label, value]) => ({ label, value })), { className: "per-class" }) : null,
  ];
}

function parityView(parity) {
  return facts([
    ...Object.entries(parity.max_abs_diff).map(([check, diff]) => [`max |torch − onnx|, ${check}`, diff.toExponential(1)]),
    ["tolerance", parity.tolerance], ["top-1 agreement", parity.top1_agreement === undefined ? null
      : `${percent(parity.top1_agreement, 2)} (at least ${percent(parity.top1_agreement_min, 1)})`],
  ]);
}

function datasetView(dataset) {
  return [facts([["name", dataset.name], ["train", dataset.train_samples], ["validation", dataset.validation_samples],
    ["test", dataset.test_samples]]),
  h("h4", {}, "Files read (md5)"),
  facts(Object.entries(dataset.files).map(([file, md5]) => [file, h("code", {}, md5)]))];
}

function trainingView(t) {
  return facts([["epochs", t.epochs], ["batch size", t.batch_size], ["optimiser", t.optimizer], ["learning rate", t.lr],
    ["weight decay", t.weight_decay], ["schedule", t.schedule], ["seed", t.seed], ["wall time", `${t.wall_time_s} s`],
    ["samples/s", t.samples_per_s], ["parameters", t.parameters.toLocaleString("en")],
    ["network", h("code", {}, JSON.stringify(t.model_config))]]);
}

function provenanceView(p) {
  return facts([["git commit", h("code", {}, p.git_commit)], ["torch", p.torch], ["onnx", p.onnx],
    ["onnxruntime", p.onnxruntime], ["opset", p.opset], ["exporter", p.exporter], ["created (UTC)", p.created_utc],
    ["source", p.source]]);
}

function runtimeView(card) {
  const b = card.batching;
  return facts([
    ["sha256", card.sha256 ? h("code", { class: "sha" }, card.sha256) : "none in its config"],
    ["execution providers", (card.providers || []).join(", ")],
    ["graph optimisation", card.graph_optimization], ["onnxruntime threads", card.intra_op_threads],
    ["a lone request's threads", card.lone_request_threads ? `${card.lone_request_threads}, spinning` : "as a batch's"],
    ["loaded and warmed in", `${card.load_seconds} s`],
    ["batching", b.max_batch_size ? `dynamic, up to ${b.max_batch_size} per call` : "one request at a time"],
    ["why", b.reason], ["queue", `${b.max_queue_size} samples`], ["longest wait for company", `${b.max_queue_delay_ms} ms`],
    ["request timeout", `${b.request_timeout_ms} ms`],
    ["computed in the event loop", b.in_event_loop_up_to_ms ? `batches of up to ${b.in_event_loop_up_to_ms} ms`
      : "a lone quick request only"],
    ["served versions", card.versions.join(", ")],
  ]);
}

function preprocessingView(p) {
  return facts(Object.entries(p).map(([key, value]) => [key, Array.isArray(value)
    ? h("code", {}, JSON.stringify(value)) : String(value)]));
}
