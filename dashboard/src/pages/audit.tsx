// The audit explorer: filters kept in the address (so a search can be shared), cursor pages,
// one record in full with its place in the hash chain, and exports of the current filter.
import { useEffect, useState } from "preact/hooks";
import { api, errorText, withQuery } from "../api";
import { value, when } from "../format";
import { href, navigate, type Route } from "../router";
import type { AuditEvent, EventDetail, EventPage } from "../types";
import { ArgsTable, Badge, ErrorBox, Fact, Head, Loading } from "../ui/common";
import { TraceFact } from "../ui/trace";
import { HazardWarning, hasHazards, JsonText, Text } from "../ui/value";

const FILTERS = ["agent", "session", "tool", "kind", "decision", "call_id", "q", "since", "until"] as const;
type Filters = Partial<Record<(typeof FILTERS)[number], string>>;
const KINDS = [
  "tool_call.decided",
  "tool_call.finished",
  "approval.requested",
  "approval.decided",
  "approval.expired",
  "llm.call",
  "policy.activated",
];
const DECISIONS = {
  Decisions: ["allow", "block", "require_approval"],
  Results: ["ok", "error"],
  Approvals: ["approved", "denied", "expired", "executed", "failed"],
};

function filtersOf(route: Route): Filters {
  const out: Filters = {};
  for (const name of FILTERS) {
    const v = route.query.get(name);
    if (v) out[name] = v;
  }
  return out;
}

// datetime-local text (the viewer's local time) → microseconds since the epoch
const micros = (local?: string) => (local ? String(new Date(local).getTime() * 1000) : undefined);

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
  if (route.path[1]) return <EventDetail seq={route.path[1]} />;
  return <Search key={route.query.toString()} filters={filtersOf(route)} />;
}

const PAGE = 50;

function Search({ filters }: { filters: Filters }) {
  const [draft, setDraft] = useState<Filters>(filters);
  const [cursors, setCursors] = useState<(string | null)[]>([null]); // the cursor of each page seen
  const [page, setPage] = useState<EventPage | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [took, setTook] = useState<number | null>(null);
  const cursor = cursors[cursors.length - 1];

  // A rare filter can come back with part of a page and a cursor (the server searches about
  // 200 ms at a time): keep asking, a few times, until the page is full or the log is done.
  useEffect(() => {
    const abort = new AbortController();
    const started = performance.now();
    setPage(null);
    (async () => {
      const found: AuditEvent[] = [];
      let next: string | null = cursor;
      for (let asked = 0; asked < 8; asked++) {
        const p: EventPage = await api<EventPage>("/v1/events", {
          query: { ...apiQuery(filters), cursor: next, limit: PAGE - found.length },
          signal: abort.signal,
        });
        found.push(...p.events);
        next = p.next_cursor;
        if (found.length >= PAGE || next === null) break;
      }
      setPage({ events: found, next_cursor: next });
      setTook(Math.round(performance.now() - started));
      setError(null);
    })().catch((e) => abort.signal.aborted || setError(errorText(e)));
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
  const exportLink = (format: string) => withQuery("/v1/events/export", { ...apiQuery(filters), format });

  return (
    <section>
      <h1>Audit log</h1>
      <form class="filters" onSubmit={apply} role="search">
        {field("agent", "Agent")}
        {field("session", "Session")}
        {field("tool", "Tool")}
        <label>
          Kind
          <select value={draft.kind ?? ""} onChange={(e) => setDraft({ ...draft, kind: e.currentTarget.value })}>
            <option value="">any</option>
            {KINDS.map((k) => (
              <option key={k}>{k}</option>
            ))}
          </select>
        </label>
        <label>
          Decision / status
          <select
            value={draft.decision ?? ""}
            onChange={(e) => setDraft({ ...draft, decision: e.currentTarget.value })}
          >
            <option value="">any</option>
            {Object.entries(DECISIONS).map(([group, names]) => (
              <optgroup key={group} label={group}>
                {names.map((d) => (
                  <option key={d}>{d}</option>
                ))}
              </optgroup>
            ))}
          </select>
        </label>
        {field("since", "From", "datetime-local")}
        {field("until", "To", "datetime-local")}
        {field("call_id", "Call id")}
        {field("q", "Text in arguments")}
        <div class="actions">
          <button type="submit" class="primary">
            Search
          </button>
          <a class="button" href="#/audit">
            Clear
          </a>
        </div>
      </form>
      <div class="toolbar">
        <span class="muted">{took !== null && page ? `${page.events.length} shown · ${took} ms` : ""}</span>
        <span>
          Export this search: <a href={exportLink("jsonl")}>JSONL</a> · <a href={exportLink("csv")}>CSV</a>
        </span>
      </div>
      <ErrorBox error={error} />
      {page === null ? (
        <Loading />
      ) : page.events.length === 0 ? (
        <p class="muted">
          {page.next_cursor
            ? `No match in the records after #${page.next_cursor}; search older records with "Older →".`
            : "No record matches."}
        </p>
      ) : (
        <div class="scroll">
          <table class="events">
            <Head cols={["#", "time (UTC)", "kind", "agent", "tool", "decision", "details"]} />
            <tbody>
              {page.events.map((e) => (
                <tr key={e.seq}>
                  <td>
                    <a href={href(["audit", e.seq])}>{e.seq}</a>
                  </td>
                  <td class="nowrap">{when(e.at_us)}</td>
                  <td>
                    <code>{e.kind}</code>
                  </td>
                  <td>{e.agent}</td>
                  <td>
                    {e.tool ? (
                      <code>
                        <Text text={e.tool} />
                      </code>
                    ) : null}
                  </td>
                  <td>{e.decision ? <Badge kind={e.decision}>{e.decision}</Badge> : null}</td>
                  <td class="clip">
                    {hasHazards(e) ? <Badge kind="hazard">hidden characters</Badge> : null} <Text text={summary(e)} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <div class="pager">
        <button type="button" disabled={cursors.length < 2} onClick={() => setCursors(cursors.slice(0, -1))}>
          ← Newer
        </button>
        <span class="muted">page {cursors.length}</span>
        <button
          type="button"
          disabled={!page?.next_cursor}
          onClick={() => page?.next_cursor && setCursors([...cursors, page.next_cursor])}
        >
          Older →
        </button>
      </div>
    </section>
  );
}

export function summary(e: AuditEvent): string {
  if (e.kind === "llm.call")
    return `${value(e.model)} · ${value(e.tokens)} tokens · ${e.priced ? "$" + value(e.cost_usd) : "unpriced"}`;
  if (e.args) {
    // A cell shows one line: a large call's first arguments are enough (the record has them all).
    const shown = Object.entries(e.args)
      .slice(0, 12)
      .map(([k, v]) => `${k}=${value(v).slice(0, 200)}`)
      .join(", ");
    return shown.length > 400 ? shown.slice(0, 400) + "…" : shown;
  }
  if (e.error) return e.error;
  if (e.reason) return e.reason;
  if (e.decided_by) return `by ${value(e.decided_by)}`;
  return "";
}

function EventDetail({ seq }: { seq: string }) {
  const [detail, setDetail] = useState<EventDetail | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    api<EventDetail>(`/v1/events/${encodeURIComponent(seq)}`)
      .then(setDetail)
      .catch((e) => setError(errorText(e)));
  }, [seq]);
  if (error) return <ErrorBox error={error} />;
  if (!detail) return <Loading />;
  const { event: e, chain } = detail;
  return (
    <article class="event">
      <button type="button" class="link back" onClick={() => history.back()}>
        ← Back
      </button>
      <h1>
        Record {e.seq} <code>{e.kind}</code>
      </h1>
      <HazardWarning value={e} what="record" />
      <dl class="facts">
        <dt>Time</dt>
        <dd>{when(e.at_us)}</dd>
        <dt>Agent</dt>
        <dd>
          {e.agent} <span class="muted">({e.environment})</span>
        </dd>
        <dt>Session</dt>
        <dd>
          {e.session ? (
            <a href={href(["sessions", e.session])}>
              <Text text={e.session} />
            </a>
          ) : (
            "—"
          )}
        </dd>
        <Fact label="Tool" when={e.tool}>
          <code>
            <Text text={e.tool ?? ""} />
          </code>
        </Fact>
        <Fact label="Decision" when={e.decision}>
          <Badge kind={e.decision ?? ""}>{e.decision}</Badge> <Text text={e.reason ?? ""} />
        </Fact>
        <Fact label="Rules" when={e.rule_ids?.length}>{(e.rule_ids ?? []).join(", ")}</Fact>
        <Fact label="Policy revision" when={e.policy_revision}>
          <code>{e.policy_revision}</code>
        </Fact>
        <Fact label="Call" when={e.call_id}>
          <a href={href(["audit"], { q: e.call_id })}>{e.call_id}</a>
        </Fact>
        <TraceFact trace={e.trace} />
        <dt>Chain</dt>
        <dd>
          position {chain.seq} of {chain.head_seq} ·{" "}
          {chain.verified ? (
            <Badge kind="ok">verified</Badge>
          ) : (
            <Badge kind="error">does not verify: {chain.problem}</Badge>
          )}
          <div class="hashes">
            <span>
              hash <code>{chain.hash}</code>
            </span>
            <span>
              follows <code>{chain.prev_hash}</code>
            </span>
          </div>
        </dd>
      </dl>
      {e.args ? (
        <>
          <h2>Arguments</h2>
          <ArgsTable args={e.args} redacted={e.args_redacted ?? []} />
          {e.args_redacted?.length ? (
            <p class="muted">
              Redacted before storage: <Text text={e.args_redacted.join(", ")} />
            </p>
          ) : null}
        </>
      ) : null}
      <h2>Whole record</h2>
      <JsonText value={e} />
    </article>
  );
}
