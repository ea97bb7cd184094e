// How the page shows an answer of /predict (labelled top-k bars, or named tensors) and an error (the server's own
// status, code and message, next to what caused it).
import { bars, h, percent, shape } from "./dom.js";

export function errorBox(error, cause) {
  const status = error.status ? `${error.status} ${error.code}` : error.code || "error";
  return h("div", { class: "error", role: "alert" },
    h("strong", {}, status), " ", h("span", { class: "message" }, error.message),
    cause ? h("div", { class: "cause" }, "caused by: ", cause) : null);
}

// body: a /predict answer; ms: the round trip; truth: the true label when the input was a published sample.
export function answerView(body, ms, truth = null) {
  const head = h("p", { class: "answered" }, `version ${body.version} of ${body.model} answered in `,
    h("strong", { class: "latency" }, `${ms.toFixed(1)} ms`), " (round trip, as this browser measured it)");
  const parts = [head];
  if (body.predictions) {
    for (const prediction of body.predictions) {
      const right = truth === null ? null : prediction.label === truth;
      parts.push(h("p", { class: "verdict" },
        h("span", { class: "predicted" }, prediction.label), ` with ${percent(prediction.probability)}`,
        right === null ? null : h("span", { class: right ? "right" : "wrong" },
          right ? ` — right (true label: ${truth})` : ` — wrong: the true label is ${truth}`)));
      parts.push(bars(prediction.top_k.map((k) => ({
        label: k.label, value: k.probability, mark: truth !== null && k.label === truth ? "truth" : null,
      })), { className: "topk" }));
    }
  }
  if (body.outputs) parts.push(tensorsView(body.outputs));
  return h("div", { class: "answer", "aria-live": "polite" }, parts);
}

const SHOWN = 64;

export function tensorsView(outputs) {
  return h("table", { class: "tensors" },
    h("thead", {}, h("tr", {}, h("th", {}, "output"), h("th", {}, "datatype"), h("th", {}, "shape"),
      h("th", {}, "values (flattened)"))),
    h("tbody", {}, Object.entries(outputs).map(([name, t]) => h("tr", { "data-output": name },
      h("td", {}, name), h("td", {}, t.datatype), h("td", { class: "shape" }, shape(t.shape)),
      h("td", { class: "values" }, valuesText(t.data))))));
}

function valuesText(data) {
  const shown = data.slice(0, SHOWN).map((v) => (typeof v === "number" && !Number.isInteger(v) ? +v.toPrecision(6) : v));
  const text = JSON.stringify(shown);
  return data.length > SHOWN ? `${text.slice(0, -1)}, … ${data.length - SHOWN} more]` : text;
}
