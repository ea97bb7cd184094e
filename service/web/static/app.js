// The page: the served models on the left, the chosen one's card, "Try it" and "Live" views on the right. The
// address's fragment names what is shown (#/cnn/1/try), so every view has a link and the back button works.
import { api, ApiError, paths } from "./api.js";
import { cardView } from "./card.js";
import { h, replace } from "./dom.js";
import { liveView, startCollecting } from "./live.js";
import { errorBox } from "./results.js";
import { tryImageView } from "./try-image.js";
import { trySequenceView } from "./try-sequence.js";
import { tryTensorsView } from "./try-tensors.js";

const VIEWS = [["card", "Card"], ["try", "Try it"], ["live", "Live"]];
const nav = document.getElementById("models");
const main = document.getElementById("main");
let models = [];
let current = new AbortController();

function link(name, version, view) {
  return `#/${encodeURIComponent(name)}/${version}/${view}`;
}

function parseRoute() {
  const [name, version, view] = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const model = models.find((m) => m.name === name) || models[0];
  const chosen = model && model.versions.map(String).includes(version) ? Number(version) : model && model.version;
  return { model, version: chosen, view: VIEWS.some(([v]) => v === view) ? view : "card" };
}

function renderNav(route) {
  replace(nav, h("h2", { class: "nav-title" }, "Models"), h("ul", {}, models.map((m) => h("li", {},
    h("a", { href: link(m.name, m.version, route.view), "aria-current": m === route.model ? "page" : null },
      h("span", { class: "model-name" }, m.name), h("span", { class: "model-meta" },
        `v${m.version}${m.versions.length > 1 ? ` of ${m.versions.length}` : ""} · ${m.task || "task not given"}`))))));
}

async function render() {
  current.abort();
  current = new AbortController();
  const { signal } = current;
  const route = parseRoute();
  renderNav(route);
  if (!route.model) {
    replace(main, h("p", {}, "No model is served."));
    return;
  }
  const { model, version, view } = route;
  document.title = `${model.name} v${version} · nnserve`;
  const versions = model.versions.length > 1 ? h("label", { class: "versions" }, "version ",
    h("select", { onchange: (event) => { location.hash = link(model.name, event.target.value, view); } },
      model.versions.map((v) => h("option", { value: v, selected: v === version }, String(v))))) : null;
  const panel = h("div", { class: "panel", id: "panel" }, h("p", { class: "muted" }, "Loading…"));
  replace(main, h("div", { class: "title" }, h("h1", {}, model.name, h("span", { class: "version" }, ` v${version}`)),
    versions, h("span", { class: "task" }, model.task || "")),
  h("nav", { class: "views", "aria-label": "Views" }, VIEWS.map(([key, text]) => h("a", {
    href: link(model.name, version, key), class: "view-link", "aria-current": key === view ? "page" : null }, text))),
  panel);
  try {
    const card = await api(paths.version(model.name, version));
    if (signal.aborted) return;
    const content = view === "card" ? cardView(card) : view === "live" ? liveView(card, signal) : tryView(card, signal);
    replace(panel, content);
  } catch (error) {
    if (!signal.aborted) replace(panel, errorBox(error, `loading ${model.name} v${version}`));
  }
}

function tryView(card, signal) {
  const kind = card.preprocessing ? card.preprocessing.kind : "tensors";
  if (kind === "image") return tryImageView(card, signal);
  if (kind === "sequence") return trySequenceView(card, signal);
  return tryTensorsView(card, signal);
}

async function header() {
  const server = document.getElementById("server");
  try {
    const meta = await api("v2");
    const ready = await api("v2/health/ready").then(() => "ready", (error) => (error instanceof ApiError
      && error.status === 503 ? "not ready" : `readiness unknown: ${error.message}`));
    replace(server, `${meta.name} ${meta.version} · ${ready}`);
  } catch (error) {
    replace(server, errorBox(error, "GET v2"));
  }
}

async function start() {
  header();
  try {
    models = (await api("models")).models;
  } catch (error) {
    replace(nav, errorBox(error, "GET models"));
    return;
  }
  window.addEventListener("hashchange", render);
  startCollecting();
  render();
}

start();
