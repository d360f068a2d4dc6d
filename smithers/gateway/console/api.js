// The console's only way to the gateway: the REST API and its event streams, same origin.
// The bearer token a person pastes is sent once, to POST /v1/session, and never stored:
// the session lives in an HttpOnly cookie; its CSRF token stays in this module's memory.

let csrf = null;

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function parse(response) {
  if (response.status === 204) return null;
  const type = response.headers.get("Content-Type") || "";
  const body = type.includes("application/json") ? await response.json() : null;
  if (!response.ok) {
    const error = (body && body.error) || {};
    throw new ApiError(response.status, error.code || "http_error", error.message || response.statusText);
  }
  return body;
}

export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    cache: "no-store",
  });
  return parse(response);
}

export async function signIn(token) {
  const response = await fetch("/v1/session", {
    method: "POST",
    headers: { Authorization: `Bearer ${token.trim()}`, Accept: "application/json" },
    credentials: "same-origin",
  });
  const session = await parse(response);
  csrf = session.csrf_token;
  return session;
}

export async function currentSession() {
  try {
    const session = await api("GET", "/v1/session");
    csrf = session.csrf_token;
    return session;
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return null;
    throw error;
  }
}

export async function signOut() {
  try {
    await api("DELETE", "/v1/session");
  } finally {
    csrf = null;
  }
}

// An event stream read with fetch (so the cookie and our error handling apply) that
// resumes from the last id it saw whenever it drops: no gap, no duplicate.
export class EventStream {
  constructor(url, cursorParam, onEvent, onState) {
    this.url = url;
    this.cursorParam = cursorParam;
    this.onEvent = onEvent;
    this.onState = onState || (() => {});
    this.lastId = 0;
    this.controller = null;
    this.stopped = false;
    this.retryMs = 500;
  }

  start(after = 0) {
    this.lastId = after;
    this.loop();
    return this;
  }

  stop() {
    this.stopped = true;
    if (this.controller) this.controller.abort();
  }

  async loop() {
    while (!this.stopped) {
      this.controller = new AbortController();
      let ended = false;
      try {
        this.onState("live");
        const sep = this.url.includes("?") ? "&" : "?";
        const response = await fetch(`${this.url}${sep}${this.cursorParam}=${this.lastId}`, {
          headers: { Accept: "text/event-stream" },
          credentials: "same-origin",
          signal: this.controller.signal,
          cache: "no-store",
        });
        if (!response.ok) {
          await parse(response);
        }
        ended = await this.read(response.body.getReader());
      } catch (error) {
        if (this.stopped) return;
        if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
          this.onState("denied", error);
          return;
        }
        this.onState("reconnecting", error);
      }
      if (ended) {
        this.onState("ended");
        return;
      }
      if (this.stopped) return;
      await new Promise((resolve) => setTimeout(resolve, this.retryMs));
    }
  }

  // true when the server said the stream is complete (an end event for a finished run)
  async read(reader) {
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return false;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const frame = { id: null, event: "message", data: "" };
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "id") frame.id = text;
          else if (field === "event") frame.event = text;
          else if (field === "data") frame.data += (frame.data ? "\n" : "") + text;
          else if (field === "retry") this.retryMs = Math.max(200, Number(text) || 500);
        }
        if (frame.event === "end") {
          let reason = "";
          try {
            reason = JSON.parse(frame.data).reason;
          } catch (error) {
            reason = "";
          }
          // terminal or deleted: complete; timeout or shutdown: resume from lastId
          if (reason === "terminal" || reason === "deleted") return true;
          continue;
        }
        if (frame.id !== null && /^\d+$/.test(frame.id)) this.lastId = Number(frame.id);
        if (frame.data) {
          try {
            this.onEvent(JSON.parse(frame.data), frame);
          } catch (error) {
            console.error("bad event", error);
          }
        }
      }
    }
  }
}
