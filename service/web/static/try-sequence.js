// Try a sequence model: pick a published test utterance (or edit its frames), see its channels over time, predict
// with POST /predict {"inputs": [frames]}.
import { api, paths, postJSON, timed } from "./api.js";
import { h, replace, svg } from "./dom.js";
import { answerView, errorBox } from "./results.js";

const COLOURS = ["#1d4ed8", "#dc2626", "#059669", "#d97706", "#7c3aed", "#db2777", "#0891b2", "#65a30d", "#9333ea",
  "#ea580c", "#475569", "#0d9488"];

export function trySequenceView(card) {
  const plot = h("div", { class: "plot" });
  const frames = h("textarea", { id: "frames", rows: 6, spellcheck: "false", class: "json",
    "aria-describedby": "frames-help" });
  const answer = h("div", { class: "answer-slot", "aria-live": "polite" });
  const picked = h("p", { class: "picked" });
  let current = null; // the published sample in the text area, while it is unchanged
  const features = card.preprocessing.features;

  const show = (sample) => {
    current = sample;
    frames.value = JSON.stringify(sample.inputs);
    replace(picked, `Test-set row ${sample.row}, true label ${sample.label}`, sample.note ? ` (${sample.note})` : "");
    replace(plot, plotView(sample.inputs, features));
    replace(answer);
  };
  frames.addEventListener("input", () => {
    current = null;
    replace(picked, "Edited frames");
    try {
      replace(plot, plotView(JSON.parse(frames.value), features));
    } catch {
      /* shown when sent: the server says what is wrong */
    }
  });
  const predict = async () => {
    let inputs;
    try {
      inputs = JSON.parse(frames.value);
    } catch (error) {
      replace(answer, errorBox({ code: "not JSON", message: error.message }, "the frames text"));
      return;
    }
    const truth = current ? current.label : null;
    try {
      const { value, ms } = await timed(() => postJSON("predict", { model: card.name, version: card.version,
        inputs: [inputs], top_k: Math.min(5, card.labels ? card.labels.length : 1) }));
      replace(answer, answerView(value, ms, truth));
    } catch (error) {
      replace(answer, errorBox(error, current ? `test-set row ${current.row}` : "the edited frames"));
    }
  };

  const list = h("div", { class: "samples" }, h("p", { class: "muted" }, "Loading the published test utterances…"));
  api(paths.samples(card.name, card.version)).then((body) => {
    if (!body.samples.length) {
      replace(list, h("p", { class: "muted" }, "This model publishes no test utterances: type frames below."));
      return;
    }
    replace(list, h("h3", {}, "Test utterances"), h("p", {}, `${body.samples.length} real items of the ${body.dataset} `
      + `${body.split} set with their true labels (✗: this version got it wrong when it was published).`),
    h("ul", { class: "utterances" }, body.samples.map((sample) => h("li", {}, h("button", { type: "button",
      class: "utterance", onclick: () => show(sample) }, `row ${sample.row} · ${sample.label} · ${sample.inputs.length} `
      + "frames", sample.note ? h("span", { class: "wrong" }, " ✗") : null)))));
    show(body.samples[0]);
  }, (error) => replace(list, errorBox(error, "loading the test utterances")));

  return h("div", { class: "try try-sequence" }, list,
    h("div", { class: "outputs" }, picked, plot,
      h("label", { for: "frames" }, "Frames (JSON: a list of frames of ", String(features), " values)"),
      frames, h("p", { id: "frames-help", class: "muted" }, "Raw values, as the dataset has them: the server "
        + "standardises them as the model's config says."),
      h("p", {}, h("button", { type: "button", class: "primary predict", onclick: predict }, "Predict")), answer));
}

function plotView(frames, features) {
  if (!Array.isArray(frames) || !frames.length || !Array.isArray(frames[0])) return h("p", { class: "muted" }, "(no frames)");
  const width = 600;
  const height = 220;
  const values = frames.flat().filter((v) => typeof v === "number");
  const low = Math.min(...values);
  const high = Math.max(...values);
  const x = (t) => (frames.length === 1 ? width / 2 : (t / (frames.length - 1)) * width);
  const y = (v) => height - ((v - low) / (high - low || 1)) * height;
  const lines = [];
  for (let c = 0; c < features; c += 1) {
    const points = frames.map((frame, t) => `${x(t).toFixed(1)},${y(frame[c]).toFixed(1)}`).join(" ");
    lines.push(svg("polyline", { points, fill: "none", stroke: COLOURS[c % COLOURS.length], "stroke-width": 1.5 },
      svg("title", {}, `channel ${c + 1}`)));
  }
  return h("figure", { class: "channels" },
    svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `${features} channels over `
      + `${frames.length} frames, values from ${low.toFixed(2)} to ${high.toFixed(2)}` }, lines),
    h("figcaption", {}, `${features} channels over ${frames.length} frames (x: time; y: value, ${low.toFixed(2)} … `
      + `${high.toFixed(2)})`, h("ul", { class: "legend" }, COLOURS.slice(0, features).map((colour, c) => {
      const swatch = h("span", { class: "swatch" });
      swatch.style.background = colour;
      return h("li", {}, swatch, `c${c + 1}`);
    }))));
}
