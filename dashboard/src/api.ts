// Every call to the server goes through here: same-origin cookie, CSRF header on changes,
// and the API's one error shape turned into an ApiError.

export interface Detail {
  location: string;
  message: string;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: Detail[] = [],
    readonly retryAfter: number | null = null,
  ) {
    super(message);
  }
}

let csrfToken = "";

export function setCsrf(token: string): void {
  csrfToken = token;
}

export const SIGNED_OUT = "clearance:signed-out";

export type Query = Record<string, string | number | boolean | null | undefined>;

export function withQuery(path: string, query?: Query): string {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) {
    if (value !== null && value !== undefined && value !== "") params.set(name, String(value));
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

export async function api<T>(
  path: string,
  options: { method?: string; body?: unknown; query?: Query; signal?: AbortSignal } = {},
): Promise<T> {
  const method = options.method ?? "GET";
  const headers: Record<string, string> = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrfToken;
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  let response: Response;
  try {
    response = await fetch(withQuery(path, options.query), {
      method,
      headers,
      credentials: "same-origin",
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      signal: options.signal,
    });
  } catch (error) {
    if (error instanceof DOMException && error.name === "AbortError") throw error;
    throw new ApiError(0, "unreachable", "The Clearance server cannot be reached. Is it running?");
  }
  if (response.ok) return (await response.json()) as T;
  let code = "error";
  let message = `${response.status} ${response.statusText}`;
  let details: Detail[] = [];
  try {
    const body = (await response.json()) as { error?: { code: string; message: string; details?: Detail[] } };
    if (body.error) {
      code = body.error.code;
      message = body.error.message;
      details = body.error.details ?? [];
    }
  } catch {
    // not the API's error shape (a proxy's page): keep the status line
  }
  const retry = response.headers.get("Retry-After");
  if (response.status === 401 && path !== "/v1/login") window.dispatchEvent(new Event(SIGNED_OUT));
  throw new ApiError(response.status, code, message, details, retry ? Number(retry) : null);
}

export function errorText(error: unknown): string {
  if (error instanceof ApiError) {
    const more = error.details.map((d) => `${d.location}: ${d.message}`).join("; ");
    return more ? `${error.message} (${more})` : error.message;
  }
  return error instanceof Error ? error.message : String(error);
}
