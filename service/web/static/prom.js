// Reading the server's own Prometheus metrics (GET /metrics, text format 0.0.4): samples, sums over label
// matches, and quantiles from histogram buckets the way Prometheus's histogram_quantile estimates them.

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

export function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = LINE.exec(line);
    if (!match) continue;
    const labels = {};
    for (const [, key, value] of (match[2] || "").matchAll(LABEL)) {
      labels[key] = value.replace(/\\n/g, "\n").replace(/\\(["\\])/g, "$1");
    }
    samples.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return samples;
}

function matches(sample, name, labels) {
  return sample.name === name && Object.entries(labels).every(([k, v]) => sample.labels[k] === v);
}

export function total(samples, name, labels = {}, where = () => true) {
  return samples.filter((s) => matches(s, name, labels) && where(s)).reduce((sum, s) => sum + s.value, 0);
}

// Cumulative bucket counts by upper bound, summed over every series of a histogram that matches the labels.
export function buckets(samples, name, labels = {}) {
  const out = new Map();
  for (const s of samples) {
    if (!matches(s, `${name}_bucket`, labels)) continue;
    const le = s.labels.le === "+Inf" ? Infinity : Number(s.labels.le);
    out.set(le, (out.get(le) || 0) + s.value);
  }
  return out;
}

// newer - older, bucket by bucket (a counter that went down, after a restart, counts from zero)
export function difference(newer, older) {
  const out = new Map();
  for (const [le, count] of newer) {
    const before = older.get(le) || 0;
    out.set(le, count >= before ? count - before : count);
  }
  return out;
}

export function quantile(q, cumulative) {
  const bounds = [...cumulative.keys()].sort((a, b) => a - b);
  const count = cumulative.get(Infinity) || 0;
  if (!count) return null;
  const rank = q * count;
  let lower = 0;
  let below = 0;
  for (const upper of bounds) {
    const here = cumulative.get(upper);
    if (here >= rank) {
      if (upper === Infinity) return lower;
      return lower + (upper - lower) * ((rank - below) / (here - below || 1));
    }
    lower = upper;
    below = here;
  }
  return lower;
}

// Per-bucket counts with readable ranges: "1", "2", "3–4", "5–8", …, "> 256"
export function distribution(cumulative) {
  const bounds = [...cumulative.keys()].sort((a, b) => a - b);
  const rows = [];
  let lower = 0;
  let below = 0;
  for (const upper of bounds) {
    const count = cumulative.get(upper) - below;
    const first = Math.floor(lower) + 1;
    const range = upper === Infinity ? `> ${lower}` : first >= upper ? `${upper}` : `${first}–${upper}`;
    rows.push({ range, count });
    lower = upper;
    below = cumulative.get(upper);
  }
  return rows;
}
