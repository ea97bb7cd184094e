// Try an image model: a picture from a file (chosen or dropped), the clipboard, a drawing, or a published test
// item; the server's preview of exactly what the model sees (POST /preview) beside the answer (POST /predict), both
// sent the same multipart body.
import { api, fetchBlob, paths, postFiles, timed } from "./api.js";
import { facts, h, replace } from "./dom.js";
import { answerView, errorBox } from "./results.js";

const PEN = 18; // px on the 280 px canvas: about the stroke width of a Fashion-MNIST item's edges

export function tryImageView(card, signal) {
  const preview = h("div", { class: "preview", "aria-live": "polite" }, h("p", { class: "muted" },
    "Choose, drop, paste or draw a picture, or take a test image: the model's view of it appears here."));
  const answer = h("div", { class: "answer-slot" });
  const status = h("p", { class: "status muted", role: "status" });
  const top = card.labels ? Math.min(5, card.labels.length) : null;

  async function run(file, { truth = null, cause = null } = {}) {
    const fields = { model: card.name, version: card.version };
    const what = cause || `${file.name} (${file.type || "unknown type"}, ${file.size.toLocaleString("en")} bytes)`;
    replace(status, `Sending ${what}…`);
    const [seen, predicted] = await Promise.allSettled([
      postFiles("preview", fields, [file]),
      timed(() => postFiles("predict", { ...fields, top_k: top }, [file])),
    ]);
    replace(status, `Sent ${what}.`);
    replace(preview, seen.status === "fulfilled" ? previewView(file, seen.value.pictures[0], seen.value.tensors)
      : errorBox(seen.reason, what));
    replace(answer, predicted.status === "fulfilled" ? answerView(predicted.value.value, predicted.value.ms, truth)
      : errorBox(predicted.reason, what));
    if (window.matchMedia("(max-width: 760px)").matches) status.scrollIntoView({ block: "start" });
  }

  const chooser = h("input", { type: "file", id: "picture-file", accept: "image/*", class: "file" });
  chooser.addEventListener("change", () => chooser.files[0] && run(chooser.files[0]));
  const drop = h("label", { class: "drop", for: "picture-file" },
    h("strong", {}, "Choose a picture"), " or drop one here — any format the server takes (PNG, JPEG, BMP, GIF, WebP, "
    + "TIFF) — or paste one (Ctrl+V / ⌘V) anywhere on this page.", chooser);
  for (const kind of ["dragenter", "dragover"]) {
    drop.addEventListener(kind, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) run(file, { cause: `dropped file ${file.name}` });
  });
  document.addEventListener("paste", (event) => {
    const data = event.clipboardData;
    const files = data ? [...data.files, ...[...data.items].filter((i) => i.kind === "file").map((i) => i.getAsFile())] : [];
    const file = files.find((f) => f && f.type.startsWith("image/"));
    if (file) {
      event.preventDefault();
      run(new File([file], file.name || "pasted.png", { type: file.type }), { cause: "pasted picture" });
    } else {
      replace(status, "The clipboard holds no picture.");
    }
  }, { signal });

  return h("div", { class: "try try-image" },
    h("div", { class: "inputs" }, drop, drawingPad(run), samplesView(card, run)),
    h("div", { class: "outputs" }, status, preview, answer),
    h("p", { class: "note" }, polarityNote(card)));
}

function polarityNote(card) {
  const p = card.preprocessing;
  if (!p) return null;
  const dark = p.background <= (p.pixel_min + p.pixel_max) / 2;
  const base = `This model was trained on items ${dark ? "light on a dark" : "dark on a light"} background. `;
  if (p.auto_invert) {
    return `${base}A picture whose border is ${dark ? "light" : "dark"} (a shoe photographed on a white table) is `
      + "inverted by the server before it is resized — the preview says when it was.";
  }
  return `${base}Send pictures that look like that: this model's config does not invert them.`;
}

function drawingPad(run) {
  const canvas = h("canvas", { width: 280, height: 280, class: "pad", "aria-label": "Drawing pad: draw with a mouse, "
    + "finger or pen; the drawing is sent when you lift it (the keyboard can use the file chooser or the test images)" });
  const ctx = canvas.getContext("2d");
  const clear = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height); };
  clear();
  let last = null;
  let drawn = false;
  const point = (event) => {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * (canvas.width / box.width), (event.clientY - box.top) * (canvas.height / box.height)];
  };
  canvas.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    last = point(event);
    stroke(event, last, last);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!last) return;
    const next = point(event);
    stroke(event, last, next);
    last = next;
  });
  const finish = () => {
    if (!last) return;
    last = null;
    send();
  };
  canvas.addEventListener("pointerup", finish);
  canvas.addEventListener("pointercancel", finish);
  function stroke(event, from, to) {
    const pressure = event.pointerType === "pen" && event.pressure > 0 ? 0.5 + event.pressure : 1;
    ctx.strokeStyle = "#fff";
    ctx.lineCap = ctx.lineJoin = "round";
    ctx.lineWidth = PEN * pressure;
    ctx.beginPath();
    ctx.moveTo(...from);
    ctx.lineTo(...to);
    ctx.stroke();
    drawn = true;
  }
  function send() {
    if (!drawn) return;
    canvas.toBlob((blob) => run(new File([blob], "drawing.png", { type: "image/png" }), { cause: "your drawing" }), "image/png");
  }
  const clearButton = h("button", { type: "button", onclick: () => { clear(); drawn = false; } }, "Clear");
  const sendButton = h("button", { type: "button", onclick: send }, "Predict the drawing");
  return h("figure", { class: "draw" }, canvas,
    h("figcaption", {}, "Draw light on dark, large, as the dataset's items are. ", clearButton, " ", sendButton));
}

function samplesView(card, run) {
  const box = h("div", { class: "samples" }, h("p", { class: "muted" }, "Loading the published test images…"));
  api(paths.samples(card.name, card.version)).then((body) => {
    if (!body.samples.length) {
      replace(box, h("p", { class: "muted" }, "This model publishes no test images (an imported model: see its card)."));
      return;
    }
    let next = 0;
    const send = async (sample) => {
      const file = await fetchBlob(sample.url, sample.file);
      run(file, { truth: sample.label, cause: `test image ${sample.file} (test-set row ${sample.row}, true label `
        + `${sample.label})` });
    };
    const button = h("button", { type: "button", class: "primary test-image", onclick: () => {
      send(body.samples[next]);
      next = (next + 1) % body.samples.length;
    } }, "Test image");
    replace(box, h("h3", {}, "Test images"),
      h("p", {}, button, ` — ${body.samples.length} real items of the ${body.dataset} ${body.split} set, `
        + "with their true labels; the ones this version got wrong when it was published are marked ✗."),
      h("ul", { class: "thumbs" }, body.samples.map((sample) => h("li", {}, h("button", {
        type: "button", class: "thumb", title: `${sample.label}${sample.note ? ` — ${sample.note}` : ""}`,
        onclick: () => send(sample),
      }, h("img", { src: sample.url, alt: `test-set row ${sample.row}`, width: 28, height: 28 }),
      h("span", {}, sample.label), sample.note ? h("span", { class: "wrong" }, " ✗") : null)))));
  }, (error) => replace(box, errorBox(error, "loading the test images")));
  return box;
}

function previewView(file, picture, tensors) {
  const theirs = h("img", { class: "original", alt: `what was sent: ${file.name}` });
  theirs.src = URL.createObjectURL(file);
  const seen = h("img", { class: "seen", alt: `what the model sees: ${picture.width}x${picture.height}` });
  seen.src = URL.createObjectURL(new Blob([Uint8Array.from(atob(picture.png), (c) => c.charCodeAt(0))],
    { type: "image/png" }));
  for (const img of [theirs, seen]) img.addEventListener("load", () => URL.revokeObjectURL(img.src), { once: true });
  return h("div", { class: "seen-by-model" },
    h("figure", {}, theirs, h("figcaption", {}, "what was sent")),
    h("figure", {}, seen, h("figcaption", {}, `what the model sees, ${picture.width}×${picture.height}`)),
    h("div", { class: "steps" }, h("h4", {}, "What the server did"),
      h("ol", {}, picture.steps.map((step) => h("li", { class: step.startsWith("inverted") ? "inverted" : null }, step))),
      facts(Object.entries(tensors).map(([name, t]) => [`tensor ${name}`,
        `${t.datatype} [${t.shape.join(", ")}], values ${t.min.toFixed(3)} … ${t.max.toFixed(3)}`]))));
}
