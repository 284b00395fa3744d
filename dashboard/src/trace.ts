// A record's trace, linked in the user's tracing UI: the server's CLEARANCE_TRACE_URL template
// (`https://langfuse.example/trace/{trace_id}`) filled from the record's W3C traceparent. The
// traceparent is whatever the record holds, so it is checked as src/clearance/_trace.py's
// `checked` does (version 00, lowercase hex, non-zero ids); anything else gets no link at all.

const PARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const ZEROS = /^0+$/;

export interface TraceParts {
  traceId: string;
  spanId: string;
}

/** The ids of a well-formed traceparent with non-zero ids, else null (the twin of `_trace.checked`). */
export function traceParts(value: unknown): TraceParts | null {
  if (typeof value !== "string" || value.length !== 55) return null;
  const found = PARENT.exec(value);
  if (!found || ZEROS.test(found[1]) || ZEROS.test(found[2])) return null;
  return { traceId: found[1], spanId: found[2] };
}

/** Where `template` shows the trace `value` is in: an http(s) URL, or null (no template, or no valid trace). */
export function traceLink(template: string | null | undefined, value: unknown): string | null {
  const parts = traceParts(value);
  if (!template || !parts || !/^https?:\/\//.test(template) || !template.includes("{trace_id}")) return null;
  const link = template
    .split("{trace_id}")
    .join(encodeURIComponent(parts.traceId))
    .split("{span_id}")
    .join(encodeURIComponent(parts.spanId));
  try {
    const url = new URL(link);
    return url.protocol === "https:" || url.protocol === "http:" ? link : null;
  } catch {
    return null; // a template the browser cannot read as a URL: no link rather than a broken one
  }
}
