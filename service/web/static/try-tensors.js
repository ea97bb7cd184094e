// Try a model with no processor: one text area per input, pre-filled with a correctly shaped example (from GET
// /models/{name}/samples: a published sample, or the server's example built from the signature), sent to
// POST /predict as named tensors; the answer's named outputs are shown with their datatypes and shapes.
import { api, paths, postJSON, timed } from "./api.js";
import { h, replace, shape } from "./dom.js";
import { answerView, errorBox } from "./results.js";

export function tryTensorsView(card) {
  const form = h("form", { class: "tensor-form", novalidate: true });
  const answer = h("div", { class: "answer-slot", "aria-live": "polite" });
  const fields = new Map();
  for (const input of card.inputs) {
    const id = `tensor-${fields.size}`;
    const area = h("textarea", { id, rows: 4, spellcheck: "false", class: "json", "data-input": input.name });
    fields.set(input.name, area);
    form.append(h("div", { class: "field" },
      h("label", { for: id }, h("strong", {}, input.name), ` ${input.datatype} ${shape(input.shape)}`),
      area, h("div", { class: "field-error" })));
  }
  form.append(h("p", {}, h("button", { type: "submit", class: "primary predict" }, "Predict")),
    h("p", { class: "muted" }, "Nested JSON lists, as /predict takes them (its shape is the nesting's; the first axis "
      + "is the batch). Outputs: ", card.outputs.map((t) => `${t.name} ${t.datatype} ${shape(t.shape)}`).join("; ")));
  const source = h("p", { class: "muted" }, "Loading an example…");
  api(paths.samples(card.name, card.version)).then((body) => {
    const example = body.samples[0];
    if (!example || !example.inputs) {
      replace(source, "No example published for this model: type its inputs.");
      return;
    }
    for (const [name, tensor] of Object.entries(example.inputs)) {
      const area = fields.get(name);
      if (area) area.value = JSON.stringify(tensor.value ?? tensor);
    }
    replace(source, body.source === "signature" ? "Pre-filled with an example built from the model's signature "
      + "(every input's shape and datatype; zeros unless its config gives a value). Edit it and predict."
      : "Pre-filled with a published sample.");
  }, (error) => replace(source, errorBox(error, "loading an example")));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const inputs = {};
    let ok = true;
    for (const [name, area] of fields) {
      const slot = area.nextElementSibling;
      replace(slot);
      try {
        inputs[name] = JSON.parse(area.value);
      } catch (error) {
        ok = false;
        replace(slot, errorBox({ code: "not JSON", message: error.message }, `input ${name}`));
      }
    }
    if (!ok) return;
    try {
      const { value, ms } = await timed(() => postJSON("predict", { model: card.name, version: card.version, inputs }));
      replace(answer, answerView(value, ms));
    } catch (error) {
      replace(answer, errorBox(error, `the inputs ${[...fields.keys()].join(", ")}`));
    }
  });
  return h("div", { class: "try try-tensors" }, source, form, answer);
}
