// How times, money and values are written on the page. Values are always rendered as text
// nodes (never as HTML): a tool's arguments come from a model and may be hostile.

export function when(us: number | null | undefined): string {
  if (us === null || us === undefined) return "—";
  const d = new Date(us / 1000);
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

export function ago(us: number, now = Date.now()): string {
  const seconds = Math.round((now - us / 1000) / 1000);
  if (seconds < 60) return `${Math.max(0, seconds)}s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h ago`;
  return `${Math.floor(seconds / 86400)}d ago`;
}

export function duration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = s % 60;
  if (h) return `${h}h ${String(m).padStart(2, "0")}m`;
  if (m) return `${m}m ${String(rest).padStart(2, "0")}s`;
  return `${rest}s`;
}

export function usd(value: string | number | null | undefined): string {
  if (value === null || value === undefined) return "unpriced";
  const n = typeof value === "string" ? Number(value) : value;
  if (n === 0) return "$0.00";
  if (Math.abs(n) < 0.01) return `$${n.toFixed(6)}`;
  return `$${n.toFixed(2)}`;
}

export function count(n: number): string {
  return n.toLocaleString("en-US");
}

export function value(v: unknown): string {
  if (typeof v === "string") return v;
  if (v === undefined) return "";
  return JSON.stringify(v);
}

export function pretty(v: unknown): string {
  return JSON.stringify(v, null, 2);
}

// A length of time in words: 3600 → "1 hour", 5400 → "1 hour 30 minutes", 172800 → "2 days".
export function lasting(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const parts: string[] = [];
  const units: [number, string][] = [
    [86400, "day"],
    [3600, "hour"],
    [60, "minute"],
    [1, "second"],
  ];
  let rest = s;
  for (const [size, name] of units) {
    const n = Math.floor(rest / size);
    rest -= n * size;
    if (n) parts.push(`${n} ${name}${n === 1 ? "" : "s"}`);
    if (parts.length === 2) break;
  }
  return parts.join(" ") || "0 seconds";
}
