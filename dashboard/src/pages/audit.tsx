// The audit explorer: a row per tool call (its decision, approval and outcome together) or every
// record on its own; filters kept in the address (so a search can be shared), cursor pages, one
// record in full with its place in the hash chain, and exports of the current filter.
import { useEffect, useState } from "preact/hooks";
import { api, errorText, withQuery } from "../api";
import { micros } from "../format";
import { href, navigate, type Route } from "../router";
import type { AuditEvent, CallPage, CallRow, EventPage } from "../types";
import { Badge, ErrorBox, Head, Loading, Pager, Time } from "../ui/common";
import { RecordLine } from "../ui/record";
import { hasHazards, Text } from "../ui/value";
import { CallList } from "./audit_calls";
import { EventDetailPage } from "./audit_record";

const FILTERS = ["view", "agent", "session", "tool", "kind", "decision", "call_id", "q", "since", "until"] as const;
type Filters = Partial<Record<(typeof FILTERS)[number], string>>;
// Every kind of record Clearance writes (clearance._store._kinds.KINDS; a browser test checks the list).
const KINDS = {
  "Tool calls": ["tool_call.decided", "tool_call.finished"],
  Approvals: [
    "approval.requested",
    "approval.voted",
    "approval.decided",
    "approval.refused",
    "approval.escalated",
    "approval.expired",
    "approval.executed",
    "approval.failed",
    "approval.abandoned",
    "approval.claim_resolved",
  ],
  "Model calls": ["llm.call"],
  Policies: ["policy.activated", "policy.shadow_activated", "policy.shadow_cleared"],
  Grants: ["grant.created", "grant.revoked", "grant.expired", "grant.exhausted"],
  "Keys and people": ["key.created", "key.revoked", "user.created", "user.updated"],
  Ingest: ["ingest.refused"],
  Checkpoints: ["checkpoint.key_introduced", "checkpoint.signed"],
};
const DECISIONS = {
  Decisions: ["allow", "block", "require_approval"],
  Results: ["ok", "error"],
  Approvals: ["approved", "denied", "expired", "cancelled", "allowed_on_timeout", "refused", "executed", "failed"],
};

function filtersOf(route: Route): Filters {
  const out: Filters = {};
  for (const name of FILTERS) {
    const v = route.query.get(name);
    if (v) out[name] = v;
  }
  return out;
}

function apiQuery(f: Filters): Record<string, string | undefined> {
  return {
    agent: f.agent,
    session: f.session,
    tool: f.tool,
    kind: f.kind,
    decision: f.decision,
    call_id: f.call_id,
    q: f.q,
    since_us: micros(f.since),
    until_us: micros(f.until),
  };
}

export function Audit({ route }: { route: Route }) {
  if (route.path[1]) return <EventDetailPage seq={route.path[1]} />;
  return <Search key={route.query.toString()} filters={filtersOf(route)} />;
}

const PAGE = 50;

interface Found {
  rows: (AuditEvent | CallRow)[];
  next_cursor: string | null;
}

// A rare filter can come back with part of a page and a cursor (the server searches about
// 200 ms at a time): keep asking, a few times, until the page is full or the log is done.
async function fill(byCall: boolean, filters: Filters, cursor: string | null, signal: AbortSignal): Promise<Found> {
  const rows: (AuditEvent | CallRow)[] = [];
  let next: string | null = cursor;
  for (let asked = 0; asked < 8; asked++) {
    const query = { ...apiQuery(filters), cursor: next, limit: PAGE - rows.length };
    if (byCall) {
      const p = await api<CallPage>("/v1/calls", { query, signal });
      rows.push(...p.calls);
      next = p.next_cursor;
    } else {
      const p = await api<EventPage>("/v1/events", { query, signal });
      rows.push(...p.events);
      next = p.next_cursor;
    }
    if (rows.length >= PAGE || next === null) break;
  }
  return { rows, next_cursor: next };
}

function Search({ filters }: { filters: Filters }) {
  const byCall = filters.view !== "records";
  const [draft, setDraft] = useState<Filters>(filters);
  const [cursors, setCursors] = useState<(string | null)[]>([null]); // the cursor of each page seen
  const [page, setPage] = useState<Found | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [took, setTook] = useState<number | null>(null);
  const cursor = cursors[cursors.length - 1];

  useEffect(() => {
    const abort = new AbortController();
    const started = performance.now();
    setPage(null);
    fill(byCall, filters, cursor, abort.signal)
      .then((found) => {
        setPage(found);
        setTook(Math.round(performance.now() - started));
        setError(null);
      })
      .catch((e) => abort.signal.aborted || setError(errorText(e)));
    return () => abort.abort();
  }, [cursor]);

  const apply = (event: Event) => {
    event.preventDefault();
    navigate(href(["audit"], draft));
  };
  const field = (name: keyof Filters, label: string, type = "text") => (
    <label>
      {label}
      <input
        name={name}
        type={type}
        value={draft[name] ?? ""}
        onInput={(e) => setDraft({ ...draft, [name]: e.currentTarget.value })}
      />
    </label>
  );
  const choice = (name: keyof Filters, label: string, groups: Record<string, string[]>) => (
    <label>
      {label}
      <select value={draft[name] ?? ""} onChange={(e) => setDraft({ ...draft, [name]: e.currentTarget.value })}>
        <option value="">any</option>
        {Object.entries(groups).map(([group, names]) => (
          <optgroup key={group} label={group}>
            {names.map((d) => (
              <option key={d}>{d}</option>
            ))}
          </optgroup>
        ))}
      </select>
    </label>
  );
  const exportLink = (format: string) => withQuery("/v1/events/export", { ...apiQuery(filters), format });
  const shown = page?.rows.length ?? 0;
  const unit = byCall ? (shown === 1 ? "call" : "calls") : shown === 1 ? "record" : "records";

  return (
    <section class="audit">
      <h1>Audit log</h1>
      <nav class="tabs" aria-label="Show">
        <a
          class="button"
          href={href(["audit"], { ...filters, view: undefined })}
          aria-current={byCall ? "page" : undefined}
        >
          By call
        </a>
        <a
          class="button"
          href={href(["audit"], { ...filters, view: "records" })}
          aria-current={byCall ? undefined : "page"}
        >
          Every record
        </a>
      </nav>
      <form class="filters" onSubmit={apply} role="search">
        {field("agent", "Agent")}
        {field("session", "Session")}
        {field("tool", "Tool")}
        {choice("kind", "Kind", KINDS)}
        {choice("decision", "Decision / status", DECISIONS)}
        {field("since", "From", "datetime-local")}
        {field("until", "To", "datetime-local")}
        {field("call_id", "Call id")}
        {field("q", "Text in arguments")}
        <div class="actions">
          <button type="submit" class="primary">
            Search
          </button>
          <a class="button" href={href(["audit"], { view: filters.view })}>
            Clear
          </a>
        </div>
      </form>
      <div class="toolbar">
        <span class="muted" role="status">
          {took !== null && page ? `${shown} ${unit} shown · ${took} ms` : ""}
        </span>
        <span>
          Export the records of this search: <a href={exportLink("jsonl")}>JSONL</a> ·{" "}
          <a href={exportLink("csv")}>CSV</a>
        </span>
      </div>
      <ErrorBox error={error} />
      {page === null ? (
        <Loading />
      ) : page.rows.length === 0 ? (
        <p class="muted">
          {page.next_cursor
            ? `No match in the records after #${page.next_cursor.split(".")[0]}; search older records with "Older →".`
            : "No record matches."}
        </p>
      ) : byCall ? (
        <CallList rows={page.rows as CallRow[]} />
      ) : (
        <Records events={page.rows as AuditEvent[]} />
      )}
      <Pager cursors={cursors} next={page?.next_cursor} onChange={setCursors} />
    </section>
  );
}

function Records({ events }: { events: AuditEvent[] }) {
  return (
    <table class="events">
      <Head cols={["#", "time", "kind", "agent", "tool", "decision", "details"]} />
      <tbody>
        {events.map((e) => (
          <tr key={e.seq}>
            <td>
              <a href={href(["audit", e.seq])} aria-label={`Record ${e.seq}`}>
                {e.seq}
              </a>
            </td>
            <td class="nowrap">
              <Time us={e.at_us} />
            </td>
            <td>
              <code>{e.kind}</code>
            </td>
            <td>
              <Text text={e.agent ?? ""} />
            </td>
            <td>
              {e.tool ? (
                <code>
                  <Text text={e.tool} />
                </code>
              ) : null}
            </td>
            <td>{e.decision ? <Badge kind={e.decision}>{e.decision}</Badge> : null}</td>
            <td class="clip">
              {hasHazards(e) ? <Badge kind="hazard">hidden characters</Badge> : null} <RecordLine event={e} />
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
