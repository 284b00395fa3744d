// The audit log a row per tool call: decided → approval → executed/failed in one row, with who
// decided, their note and edits; opened, the row lists each step with its time and its record.
// A record of no call (an LLM call, a policy activation) is a row of its own.
import { useState } from "preact/hooks";
import { count, value } from "../format";
import { href } from "../router";
import type { AuditEvent, CallRow } from "../types";
import { Badge, Time } from "../ui/common";
import { Decider, Edits, RecordLine, argsLine, has, shown } from "../ui/record";
import { Text, hasHazards } from "../ui/value";

const APPROVAL_ENDS = ["approval.decided", "approval.expired", "approval.abandoned"];
const RAN = ["approval.executed", "approval.failed"];

// What a call came to, step by step: [decision, approval, outcome], each a badge (a missing one left out).
interface Story {
  decided?: AuditEvent;
  requested?: AuditEvent;
  approval?: AuditEvent; // the decision (or expiry) of its approval
  outcome?: AuditEvent; // approval.executed / .failed, else tool_call.finished
}

function storyOf(steps: AuditEvent[]): Story {
  const last = (kinds: string[]) => [...steps].reverse().find((e) => kinds.includes(e.kind ?? ""));
  return {
    decided: steps.find((e) => e.kind === "tool_call.decided"),
    requested: last(["approval.requested"]),
    approval: last(APPROVAL_ENDS),
    outcome: last(RAN) ?? last(["tool_call.finished"]),
  };
}

function word(v: unknown): string {
  return typeof v === "string" ? v : shown(v);
}

function Chain({ story, steps }: { story: Story; steps: AuditEvent[] }) {
  const links: { kind: string; text: string }[] = [];
  const { decided, requested, approval, outcome } = story;
  if (decided) links.push({ kind: word(decided.decision), text: word(decided.decision) });
  if (approval) links.push({ kind: word(approval.decision), text: word(approval.decision) });
  else if (requested) links.push({ kind: "pending", text: "pending" });
  if (outcome) links.push({ kind: word(outcome.decision), text: word(outcome.decision) });
  else if (decided?.decision === "allow" || approval?.decision === "approved")
    links.push({ kind: "none", text: "no outcome yet" });
  if (!links.length) {
    const first = steps[0];
    return first?.decision ? <Badge kind={word(first.decision)}>{word(first.decision)}</Badge> : null;
  }
  return (
    <span class="chain">
      {links.map((l, i) => (
        <span key={i}>
          {i ? <span aria-hidden="true"> → </span> : null}
          {i ? <span class="visually-hidden">, then </span> : null}
          <Badge kind={l.kind}>
            <Text text={l.text} />
          </Badge>
        </span>
      ))}
    </span>
  );
}

// The row's details: who decided and their note and edits first, then the arguments (or the reason, the error).
function Details({ story, steps }: { story: Story; steps: AuditEvent[] }) {
  const { decided, approval, outcome } = story;
  if (!decided && !approval && !outcome) return <RecordLine event={steps[0]} />;
  return (
    <>
      {approval ? (
        <>
          <Decider event={approval} />
          <Edits event={approval} />
        </>
      ) : null}
      {decided ? <Text text={argsLine(decided.args)} /> : null}
      {decided && decided.decision !== "allow" && !approval && has(decided.reason) ? (
        <span class="muted">
          <Text text={shown(decided.reason)} />
        </span>
      ) : null}
      {outcome && has(outcome.error) ? (
        <span class="error">
          <Text text={shown(outcome.error)} />
        </span>
      ) : null}
    </>
  );
}

function stepTitle(e: AuditEvent): string {
  switch (e.kind) {
    case "tool_call.decided":
      return `decided: ${word(e.decision)}`;
    case "approval.requested":
      return "approval requested";
    case "approval.voted":
      return "approval vote";
    case "approval.decided":
    case "approval.expired":
    case "approval.abandoned":
      return `approval ${word(e.decision)}`;
    case "approval.escalated":
      return "approval escalated";
    case "approval.claim_resolved":
      return `dead claim resolved: ${word(e.decision)}`;
    case "approval.refused":
      return "a decision refused";
    case "tool_call.finished":
      return `ran: ${word(e.decision)}`;
    case "approval.executed":
    case "approval.failed":
      return `approval ${word(e.decision)}`;
    default:
      return e.kind ?? "unreadable record";
  }
}

function Steps({ id, row }: { id: string; row: CallRow }) {
  return (
    <ol class="steps" id={id}>
      {row.steps.map((e) => (
        <li key={e.seq}>
          <span class="step-head">
            <Time us={e.at_us} relative={false} />{" "}
            <span class="step-title">
              <Text text={stepTitle(e)} />
            </span>{" "}
            <a href={href(["audit", e.seq])} aria-label={`Record ${e.seq}`}>
              #{e.seq}
            </a>
          </span>
          <span class="step-detail">
            <RecordLine event={e} />
          </span>
        </li>
      ))}
      {row.more_steps ? (
        <li class="muted">
          and {count(row.more_steps)}
          {row.more_capped ? "+" : ""} more records:{" "}
          <a href={href(["audit"], { call_id: row.call_id ?? undefined, view: "records" })}>all of them</a>
        </li>
      ) : null}
    </ol>
  );
}

function Call({ row, n }: { row: CallRow; n: number }) {
  const [open, setOpen] = useState(false);
  const steps = row.steps;
  const first = steps[0];
  if (!first) return null;
  const story = storyOf(steps);
  const total = steps.length + row.more_steps;
  // Rows are in the order of their newest record: show its time (not the oldest step's).
  const times = steps.map((e) => e.at_us).filter((t): t is number => typeof t === "number");
  const newest = times.length ? Math.max(...times) : first.at_us;
  const id = `call-steps-${n}`;
  const tool = steps.find((e) => has(e.tool))?.tool;
  return (
    <li class={`call${open ? " open" : ""}`}>
      <div class="call-head">
        {row.call_id ? (
          <button
            type="button"
            class="expand"
            aria-expanded={open}
            aria-controls={id}
            onClick={() => setOpen(!open)}
          >
            <span aria-hidden="true">{open ? "▾" : "▸"}</span> {total}
            {row.more_capped ? "+" : ""} {total === 1 ? "step" : "steps"}
          </button>
        ) : (
          <a class="expand" href={href(["audit", first.seq])}>
            #{first.seq}
          </a>
        )}
        <Time us={newest} />
        <span class="call-what">
          {tool ? (
            <code>
              <Text text={word(tool)} />
            </code>
          ) : (
            <code>{word(first.kind)}</code>
          )}{" "}
          <span class="muted">
            from <Text text={word(row.agent ?? first.agent)} />
          </span>
        </span>
        <Chain story={story} steps={steps} />
      </div>
      <div class="call-detail">
        {steps.some(hasHazards) ? <Badge kind="hazard">hidden characters</Badge> : null}
        <Details story={story} steps={steps} />
      </div>
      {open ? <Steps id={id} row={row} /> : null}
    </li>
  );
}

/** A page of calls, newest first. */
export function CallList({ rows }: { rows: CallRow[] }) {
  return (
    <ol class="calls" aria-label="Calls, newest first">
      {rows.map((row, n) => (
        <Call key={`${value(row.agent)}\u0000${row.call_id ?? row.steps[0]?.seq}`} row={row} n={n} />
      ))}
    </ol>
  );
}
