// One audit record in a line: who decided, their note and edits ("amount 355.08 → 150"), what
// ran and how long, a model call's tokens and cost. Records are open and may come from a hostile
// agent: every field is read as unknown and shown as text (hidden characters as tokens).
import { millis, tokens, usd, value } from "../format";
import type { AuditEvent } from "../types";
import { Text } from "./value";

const CELL = 200; // characters of one value in a line (the record has it whole)

function clip(text: string, most = CELL): string {
  return text.length > most ? text.slice(0, most) + "…" : text;
}

// A value as it reads in a line: a string as itself, anything else as JSON, an absent one as "(none)".
export function shown(v: unknown): string {
  return v === undefined || v === null ? "(none)" : clip(value(v));
}

// A field the record holds as text worth showing (not absent, null or empty).
export function has(v: unknown): boolean {
  if (v === undefined || v === null || v === "") return false;
  if (Array.isArray(v)) return v.length > 0;
  if (typeof v === "object") return Object.keys(v).length > 0;
  return true;
}

interface Change {
  arg?: unknown;
  from?: unknown;
  to?: unknown;
}

function changesOf(e: AuditEvent): Change[] {
  const list = e.changes;
  if (!Array.isArray(list)) return [];
  return list.filter((c): c is Change => c !== null && typeof c === "object" && !Array.isArray(c));
}

/** What an approver changed before approving, argument by argument: "amount 355.08 → 150". */
export function Edits({ event: e }: { event: AuditEvent }) {
  const changes = changesOf(e);
  if (!changes.length) return null;
  return (
    <span class="edits">
      {changes.slice(0, 20).map((c, i) => (
        <span class="edit" key={i}>
          <code>
            <Text text={shown(c.arg)} />
          </code>{" "}
          <Text text={shown(c.from)} /> → <Text text={shown(c.to)} />
        </span>
      ))}
      {changes.length > 20 ? <span class="muted"> and {changes.length - 20} more</span> : null}
    </span>
  );
}

/** Who decided (or ran) it and their note, as they read in a row: by user:dana · “Already refunded”. */
export function Decider({ event: e, label = "by" }: { event: AuditEvent; label?: string }) {
  return (
    <>
      {has(e.by) ? (
        <span class="decider">
          {label} <Text text={shown(e.by)} />
        </span>
      ) : null}
      {has(e.note) ? (
        <q class="note">
          <Text text={shown(e.note)} />
        </q>
      ) : null}
    </>
  );
}

// A call's first arguments, in a line ("order_id=A-1, amount=355.08"): the record has them all.
export function argsLine(args: unknown): string {
  if (args === null || typeof args !== "object" || Array.isArray(args)) return "";
  const line = Object.entries(args)
    .slice(0, 12)
    .map(([k, v]) => `${k}=${clip(value(v))}`)
    .join(", ");
  return clip(line, 400);
}

// An LLM call in a line: "gpt-4o-mini · 18,070 tokens · $0.0030 · 1.41 s".
export function llmLine(e: AuditEvent): string {
  const cost = e.priced ? usd(value(e.cost_usd)) : "unpriced";
  const latency = typeof e.latency_ms === "number" ? ` · ${millis(e.latency_ms)}` : "";
  return `${value(e.model)} · ${tokens(typeof e.tokens === "number" ? e.tokens : 0)} · ${cost}${latency}`;
}

/** The details of one record, in a line: its arguments, who decided and why, what it cost. */
export function RecordLine({ event: e }: { event: AuditEvent }) {
  const kind = e.kind ?? "";
  if (kind === "llm.call") return <Text text={llmLine(e)} />;
  if (kind === "tool_call.decided")
    return (
      <>
        <Text text={argsLine(e.args)} />
        {e.decision !== "allow" && has(e.reason) ? (
          <span class="muted">
            <Text text={shown(e.reason)} />
          </span>
        ) : null}
      </>
    );
  if (kind === "tool_call.finished" || kind === "approval.executed" || kind === "approval.failed")
    return (
      <>
        {typeof e.duration_ms === "number" ? <span>ran for {millis(e.duration_ms)}</span> : null}
        {kind !== "tool_call.finished" ? <Decider event={e} label="run by" /> : null}
        {has(e.error) ? (
          <span class="error">
            <Text text={shown(e.error)} />
          </span>
        ) : null}
      </>
    );
  if (kind === "approval.requested")
    return has(e.approvers) ? (
      <span>
        asked of <Text text={shown(Array.isArray(e.approvers) ? e.approvers.join(", ") : e.approvers)} />
      </span>
    ) : null;
  if (kind.startsWith("approval.")) {
    return (
      <>
        <Decider event={e} />
        <Edits event={e} />
        {typeof e.waited_ms === "number" ? <span class="muted">waited {millis(e.waited_ms)}</span> : null}
        {kind === "approval.refused" && has(e.reason) ? <Text text={shown(e.reason)} /> : null}
      </>
    );
  }
  if (kind === "policy.activated")
    return (
      <span>
        <Text text={shown(e.policy_revision)} />
        {has(e.scope) ? (
          <>
            {" "}
            for <Text text={shown(e.scope)} />
          </>
        ) : null}{" "}
        <Decider event={e} />
      </span>
    );
  if (has(e.by) || has(e.note)) return <Decider event={e} />;
  if (has(e.error)) return <Text text={shown(e.error)} />;
  if (has(e.reason)) return <Text text={shown(e.reason)} />;
  return null;
}
