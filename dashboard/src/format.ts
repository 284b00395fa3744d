// How times, money and values are written on the page. Values are always rendered as text
// nodes (never as HTML): a tool's arguments come from a model and may be hostile.

// A moment as a Date, or null when it is none JavaScript can hold: a record's time comes from an
// agent, and `new Date(9e15).toISOString()` throws (a page that formats it would go blank).
export function moment(us: unknown): Date | null {
  if (typeof us !== "number" || !Number.isFinite(us) || Math.abs(us / 1000) > 8.64e15) return null;
  return new Date(us / 1000);
}

// A time no calendar holds, as the number it is.
function outOfRange(us: unknown): string {
  return `${String(us)} µs (not a date)`;
}

// A moment in the viewer's own time zone ("2026-11-30 09:14:03"): `utc()` gives the same moment in
// UTC for a title, and `<Time>` (ui/common.tsx) shows both with "3m ago".
export function when(us: number | null | undefined): string {
  if (us === null || us === undefined) return "—";
  const d = moment(us);
  if (d === null) return outOfRange(us);
  const pad = (n: number) => String(n).padStart(2, "0");
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
  );
}

export function utc(us: number | null | undefined): string {
  if (us === null || us === undefined) return "—";
  const d = moment(us);
  return d === null ? outOfRange(us) : d.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

export function ago(us: number, now = Date.now()): string {
  if (moment(us) === null) return "";
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

// Time left, as a list shows it: to the minute, and to the second in the last two ("2h 05m", "12m", "45s").
export function soon(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  return s < 120 ? `${s}s` : duration(s - (s % 60)).replace(/ 00s$/, "");
}

// Money, one precision everywhere: spend to four decimals ("$0.0800", "$0.0059", "$1,234.5000"),
// amounts under a hundredth of a cent as "<$0.0001"; `cents` for limits and caps ("$2.00").
export function usd(value: string | number | null | undefined, cents = false): string {
  if (value === null || value === undefined) return "unpriced";
  const n = typeof value === "string" ? Number(value) : value;
  if (!Number.isFinite(n)) return String(value);
  const digits = cents ? 2 : 4;
  if (n !== 0 && Math.abs(n) < 10 ** -digits) return `${n < 0 ? "-" : ""}<$${(10 ** -digits).toFixed(digits)}`;
  const text = Math.abs(n).toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
  return `${n < 0 ? "-" : ""}$${text}`;
}

// A whole number with separators: 18070 → "18,070".
export function count(n: number): string {
  return n.toLocaleString("en-US");
}

// Tokens: 18070 → "18,070 tokens", 1 → "1 token".
export function tokens(n: number | null | undefined): string {
  const t = Number(n ?? 0);
  return `${count(t)} token${t === 1 ? "" : "s"}`;
}

// A short length of time given in milliseconds: "0.42 ms", "13.2 ms", "413 ms", "1.41 s", "2m 05s".
export function millis(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return "—";
  const m = Math.max(0, ms);
  if (m < 10) return `${m.toFixed(2)} ms`;
  if (m < 100) return `${m.toFixed(1)} ms`;
  if (m < 1000) return `${Math.round(m)} ms`;
  if (m < 60_000) return `${(m / 1000).toFixed(2)} s`;
  return duration(m / 1000);
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

// datetime-local text (the viewer's local time) → microseconds since the epoch; none for no date.
export function micros(local?: string): string | undefined {
  const ms = local ? new Date(local).getTime() : NaN;
  return Number.isFinite(ms) && ms >= 0 ? String(ms * 1000) : undefined;
}
