// Building the page's elements. Text from the server (names, labels, descriptions, error messages) only ever
// becomes text nodes or attribute values: nothing here parses HTML, so a label "<img src=x onerror=...>" is shown
// as those characters. Event handlers are attached with addEventListener, never as attributes.

export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = String(value);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function svg(tag, attributes = {}, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attributes)) el.setAttribute(key, String(value));
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function percent(value, digits = 1) {
  return `${(value * 100).toFixed(digits)}%`;
}

export function shape(dims) {
  return `[${dims.map((d) => (d === -1 ? "?" : d)).join(", ")}]`;
}

// A definition list of [term, value] rows; rows whose value is null are left out.
export function facts(rows) {
  return h("dl", { class: "facts" }, rows.filter(([, v]) => v !== null && v !== undefined && v !== "")
    .map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]));
}

// Horizontal bars: [{label, value (0..1), text?, mark?}]; the bar's width is set through the CSSOM, which the
// Content-Security-Policy allows (it forbids inline style attributes).
export function bars(items, { className = "" } = {}) {
  return h("ol", { class: `bars ${className}` }, items.map((item) => {
    const fill = h("span", { class: "fill" });
    fill.style.width = `${Math.max(0, Math.min(1, item.value)) * 100}%`;
    return h("li", { class: item.mark ? `mark-${item.mark}` : null },
      h("span", { class: "bar-label" }, item.label),
      h("span", { class: "track", "aria-hidden": "true" }, fill),
      h("span", { class: "bar-value" }, item.text ?? percent(item.value)));
  }));
}
