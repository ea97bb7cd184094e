// The public API, as any client calls it. Paths are relative (no leading slash), so the page works under whatever
// prefix a proxy serves it from.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const enc = encodeURIComponent;

export const paths = {
  version: (name, version) => `models/${enc(name)}/versions/${enc(version)}`,
  samples: (name, version) => `models/${enc(name)}/versions/${enc(version)}/samples`,
  ready: (name, version) => `v2/models/${enc(name)}/versions/${enc(version)}/ready`,
  config: (name, version) => `v2/models/${enc(name)}/versions/${enc(version)}/config`,
};

// fetch, then the JSON body; a non-2xx answer throws ApiError with the server's own message and code.
export async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (error) {
    throw new ApiError(0, "no_answer", `the server did not answer (${error.message})`);
  }
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) {
    const message = body && typeof body.error === "string" ? body.error : text.slice(0, 500) || response.statusText;
    throw new ApiError(response.status, body && body.code ? body.code : "http_error", message);
  }
  return body;
}

export function postJSON(path, body) {
  return api(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
}

// multipart/form-data, as `curl -F model=cnn -F file=@picture.png` sends it
export function postFiles(path, fields, files) {
  const form = new FormData();
  for (const [key, value] of Object.entries(fields)) if (value !== null && value !== undefined) form.append(key, value);
  for (const file of files) form.append("file", file, file.name);
  return api(path, { method: "POST", body: form });
}

// Runs fn and measures its round trip in milliseconds.
export async function timed(fn) {
  const start = performance.now();
  const value = await fn();
  return { value, ms: performance.now() - start };
}

export async function fetchBlob(path, name) {
  const response = await fetch(path);
  if (!response.ok) throw new ApiError(response.status, "http_error", `${path}: ${response.statusText}`);
  const blob = await response.blob();
  return new File([blob], name, { type: blob.type });
}
