// A session on a time axis: model calls, tool runs and approval waits as bars, each row a button
// that selects its step of the replay, and the cost so far drawn along the same axis. Drawn by
// us in SVG with percentages (no inline styles, which the CSP forbids); every name is a text node
// with hidden characters shown as tokens (<Text>), never raw.
import { memo } from "preact/compat";
import { useEffect, useMemo, useRef } from "preact/hooks";
import { duration, millis, usd } from "../format";
import type { AuditEvent } from "../types";
import { Text } from "../ui/value";

export type Kind = "model" | "tool" | "wait";

export interface Span {
  kind: Kind;
  label: string; // a model or tool name, as recorded
  start: number; // µs
  end: number; // µs
  step: number; // the step a click selects
  steps: number[]; // every step of this bar (it is shown as current for each)
  detail: string; // how long, what it cost, how it ended
  outcome: string; // "ok", "error", "block", "approved", "denied", … ("" when unknown)
  cut: boolean; // its start lay before the session's recorded span and is drawn from there
}

// A field of a record as a finite number ≥ 0, or null (records are open: anything may be there).
function amount(v: unknown): number | null {
  const n = typeof v === "number" ? v : typeof v === "string" && v.trim() !== "" ? Number(v) : NaN;
  return Number.isFinite(n) && n >= 0 ? n : null;
}

function text(v: unknown): string {
  return typeof v === "string" ? v : v === undefined || v === null ? "" : JSON.stringify(v);
}

export function priced(e: AuditEvent): boolean {
  return e.priced === true || (e.priced === undefined && e.cost_usd !== null && e.cost_usd !== undefined);
}

/** The cost of one LLM call in dollars, 0 for an unpriced one. */
export function costOf(e: AuditEvent): number {
  return e.kind === "llm.call" && priced(e) ? (amount(e.cost_usd) ?? 0) : 0;
}

interface Open {
  step: number;
  at: number;
  tool: string;
}

const ENDS_WAIT = new Set(["approval.decided", "approval.expired", "approval.abandoned"]);

/** The bars of a session's events (in chain order), and the time span they are drawn on. */
export function spans(events: AuditEvent[]): { bars: Span[]; from: number; to: number } {
  let first = Infinity;
  let last = -Infinity;
  for (const e of events) {
    if (typeof e.at_us !== "number" || !Number.isFinite(e.at_us)) continue;
    first = Math.min(first, e.at_us);
    last = Math.max(last, e.at_us);
  }
  if (first === Infinity) return { bars: [], from: 0, to: 1 };
  // A duration reaching further back than the session lasted (a wrong or hostile record) is cut
  // there, so one record cannot squeeze every other bar into a line.
  const floor = first - Math.max(last - first, 1_000_000);
  const bars: Span[] = [];
  const calls = new Map<string, Open>();
  const waits = new Map<string, Open>();
  const callKey = (e: AuditEvent) => `${text(e.agent)}\u0000${text(e.call_id)}`;
  const waitKey = (e: AuditEvent) => (typeof e.approval_id === "string" ? e.approval_id : callKey(e));
  const bar = (kind: Kind, label: string, start: number, end: number, steps: number[], detail: string, outcome = "") =>
    bars.push({
      kind,
      label,
      start: Math.max(start, floor),
      end: Math.max(end, start, floor),
      step: steps[steps.length - 1],
      steps,
      detail,
      outcome,
      cut: start < floor,
    });
  events.forEach((e, i) => {
    const at = e.at_us;
    if (typeof at !== "number" || !Number.isFinite(at)) return; // a record that says not when
    const took = (ms: unknown) => at - (amount(ms) ?? 0) * 1000;
    switch (e.kind) {
      case "llm.call": {
        const latency = amount(e.latency_ms);
        const cost = priced(e) ? usd(costOf(e)) : "unpriced";
        bar("model", text(e.model), took(e.latency_ms), at, [i], [latency === null ? null : millis(latency), cost].filter(Boolean).join(" · "));
        break;
      }
      case "tool_call.decided":
        if (e.decision === "block") bar("tool", text(e.tool), at, at, [i], "blocked", "block");
        else if (e.call_id !== undefined) calls.set(callKey(e), { step: i, at, tool: text(e.tool) });
        else bar("tool", text(e.tool), at, at, [i], text(e.decision), text(e.decision));
        break;
      case "tool_call.finished": {
        const open = calls.get(callKey(e));
        calls.delete(callKey(e));
        const ran = amount(e.duration_ms);
        const outcome = text(e.decision);
        const steps = open ? [open.step, i] : [i];
        bar("tool", text(e.tool) || open?.tool || "", took(e.duration_ms), at, steps, [ran === null ? null : millis(ran), outcome].filter(Boolean).join(" · "), outcome);
        break;
      }
      case "approval.requested":
        waits.set(waitKey(e), { step: i, at, tool: text(e.tool) });
        break;
      default:
        if (e.kind && ENDS_WAIT.has(e.kind)) {
          const open = waits.get(waitKey(e));
          waits.delete(waitKey(e));
          const begun = open ? open.at : took(e.waited_ms);
          const outcome = text(e.decision ?? e.kind.split(".")[1]);
          const steps = open ? [open.step, i] : [i];
          bar("wait", text(e.tool) || open?.tool || "", begun, at, steps, `waited ${millis((at - begun) / 1000)} · ${outcome}`, outcome);
        }
    }
  });
  // A call decided but with no record of running, and a wait with no decision yet, end where the record does.
  for (const open of calls.values()) bar("tool", open.tool, open.at, open.at, [open.step], "no record of it running", "allow");
  for (const open of waits.values()) bar("wait", open.tool, open.at, last, [open.step], "no decision recorded", "pending");
  bars.sort((a, b) => a.start - b.start || a.step - b.step);
  const from = bars.reduce((min, b) => Math.min(min, b.start), first);
  return { bars, from, to: Math.max(last, from + 1) };
}

// Tick spacings in µs: 1 ms … 1 day, about five ticks across whatever the session lasted.
const STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500]
  .map((ms) => ms * 1000)
  .concat([1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 21600, 43200, 86400].map((s) => s * 1e6));

function ticks(span: number): number[] {
  const every = STEPS.find((s) => span / s <= 6) ?? Math.ceil(span / 6 / 86_400e6) * 86_400e6;
  const out: number[] = [];
  for (let t = 0; t <= span; t += every) out.push(t);
  return out;
}

function offset(us: number): string {
  return us >= 1e6 ? duration(us / 1e6) : millis(us / 1000);
}

const pct = (x: number) => `${Math.min(100, Math.max(0, x)).toFixed(3)}%`;

const KIND_NAME: Record<Kind, string> = { model: "model", tool: "tool", wait: "approval" };

// One bar, a button that selects its step; drawn again only when it becomes or stops being current.
const BarRow = memo(function BarRow({
  bar: b,
  from,
  span,
  current,
  go,
}: {
  bar: Span;
  from: number;
  span: number;
  current: boolean;
  go: (step: number) => void;
}) {
  const x = (us: number) => ((us - from) / span) * 100;
  return (
    <li>
      <button
        type="button"
        class={`tl-row tl-${b.kind}${current ? " current" : ""}`}
        aria-current={current ? "step" : undefined}
        onClick={() => go(b.step)}
      >
        <span class="tl-label">
          <span class="tl-kind">{KIND_NAME[b.kind]}</span> <Text text={b.label || "unnamed"} />{" "}
          <span class="tl-detail">{b.detail}</span>
          <span class="visually-hidden">, step {b.step + 1}</span>
        </span>
        <svg class="tl-track" aria-hidden="true">
          <rect
            x={pct(Math.min(x(b.start), 99.4))}
            width={pct(Math.max(x(b.end) - x(b.start), 0.6))}
            y="5"
            height="12"
            rx="2"
            class={`tl-bar tl-bar-${b.kind} tl-out-${b.outcome.replace(/[^a-z_]/g, "")}${b.cut ? " tl-cut" : ""}`}
          />
        </svg>
      </button>
    </li>
  );
});

export function Timeline({
  events,
  at,
  cumulative,
  go,
}: {
  events: AuditEvent[];
  at: number;
  cumulative: number[]; // the cost so far at each step
  go: (step: number) => void;
}) {
  const { bars, from, to } = useMemo(() => spans(events), [events]);
  const list = useRef<HTMLOListElement>(null);
  const current = bars.findIndex((b) => b.steps.includes(at));
  useEffect(() => {
    // The current bar stays in view inside the scrolled list, without moving the page.
    const row = list.current?.querySelector<HTMLElement>('[aria-current="step"]');
    const box = list.current;
    if (!row || !box) return;
    if (row.offsetTop < box.scrollTop || row.offsetTop + row.offsetHeight > box.scrollTop + box.clientHeight)
      box.scrollTop = row.offsetTop - box.clientHeight / 2;
  }, [current]);
  if (!bars.length) return null;
  const span = to - from;
  const x = (us: number) => ((us - from) / span) * 100;
  const cursor = events[at]?.at_us;
  const marks = ticks(span);
  const counts = (k: Kind, what: string) => {
    const n = bars.filter((b) => b.kind === k).length;
    return `${n} ${what}${n === 1 ? "" : "s"}`;
  };

  // The cost so far as a step line: one point per LLM call, flat in between.
  const total = cumulative[cumulative.length - 1] ?? 0;
  const points: string[] = ["0,40"];
  let y = 40;
  events.forEach((e, i) => {
    if (e.kind !== "llm.call" || typeof e.at_us !== "number" || !Number.isFinite(e.at_us)) return;
    const px = x(e.at_us) * 10;
    points.push(`${px.toFixed(2)},${y.toFixed(2)}`);
    y = total > 0 ? 40 - (cumulative[i] / total) * 36 : 40;
    points.push(`${px.toFixed(2)},${y.toFixed(2)}`);
  });
  points.push(`1000,${y.toFixed(2)}`);

  return (
    <figure class="session-timeline" aria-labelledby="timeline-caption">
      <figcaption id="timeline-caption">
        Timeline: {counts("model", "model call")}, {counts("tool", "tool call")}, {counts("wait", "approval wait")} over{" "}
        {offset(span)}. Choose a bar to go to its step.
      </figcaption>
      <div class="tl-row tl-axis" aria-hidden="true">
        <span class="tl-label">time since start</span>
        <svg class="tl-track">
          {marks.map((t) => (
            <g key={t}>
              <line x1={pct(x(from + t))} x2={pct(x(from + t))} y1="16" y2="22" class="tl-tick" />
              <text
                x={pct(x(from + t))}
                y="12"
                class="tl-tick-text"
                text-anchor={t === 0 ? "start" : x(from + t) > 90 ? "end" : "middle"}
              >
                {t === 0 ? "0" : offset(t)}
              </text>
            </g>
          ))}
        </svg>
      </div>
      <ol class="tl-rows" ref={list}>
        {bars.map((b, n) => (
          <BarRow key={`${b.step}-${b.kind}`} bar={b} from={from} span={span} current={n === current} go={go} />
        ))}
      </ol>
      <div class="tl-row tl-cost">
        <span class="tl-label">
          cost so far <strong>{usd(cumulative[at] ?? 0)}</strong> of {usd(total)}
        </span>
        <svg class="tl-track" aria-hidden="true">
          <svg x="0" y="4" width="100%" height="40" viewBox="0 0 1000 40" preserveAspectRatio="none">
            <polyline points={points.join(" ")} class="tl-cost-line" vector-effect="non-scaling-stroke" />
          </svg>
          {cursor !== undefined ? (
            <line x1={pct(x(cursor))} x2={pct(x(cursor))} y1="0" y2="100%" class="tl-cursor" />
          ) : null}
        </svg>
      </div>
    </figure>
  );
}
