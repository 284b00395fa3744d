// Decisions: the history of approvals decided — approved, granted, denied, expired, cancelled —
// each with who decided, their note, the edit ("amount 355.08 → 150", nested parts by path), the
// grant given with it, and how long the agent waited. Filters kept in the address (so a view can
// be shared), pages newest first, and exports of the current filter.
import { useEffect, useState } from "preact/hooks";
import { api, errorText, withQuery } from "../api";
import { count, micros, millis, usd } from "../format";
import { href, navigate, type Route } from "../router";
import type { Decision, DecisionChange, DecisionPage } from "../types";
import { Badge, ErrorBox, Loading, Pager, Time } from "../ui/common";
import { Text, Value } from "../ui/value";
import { visible } from "../visible";

const OUTCOMES = ["approved", "granted", "denied", "expired", "allowed_on_timeout", "cancelled"] as const;
const FILTERS = ["outcome", "decider", "tool", "agent", "session", "since", "until"] as const;
type Filters = Partial<Record<(typeof FILTERS)[number], string>>;
const PAGE = 50;

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
    outcome: f.outcome,
    decider: f.decider,
    tool: f.tool,
    agent: f.agent,
    session: f.session,
    since_us: micros(f.since),
    until_us: micros(f.until),
  };
}

export function Decisions({ route }: { route: Route }) {
  useEffect(() => {
    document.title = "Decisions · Clearance";
  }, []);
  return <History key={route.query.toString()} filters={filtersOf(route)} />;
}

function History({ filters }: { filters: Filters }) {
  const [cursors, setCursors] = useState<(string | null)[]>([null]); // the cursor of each page seen
  const [page, setPage] = useState<DecisionPage | null>(null);
  const [error, setError] = useState<string | null>(null);
  const cursor = cursors[cursors.length - 1];

  useEffect(() => {
    const abort = new AbortController();
    setPage(null);
    api<DecisionPage>("/v1/decisions", {
      query: { ...apiQuery(filters), cursor, limit: PAGE },
      signal: abort.signal,
    })
      .then((found) => {
        setPage(found);
        setError(null);
      })
      .catch((e) => abort.signal.aborted || setError(errorText(e)));
    return () => abort.abort();
  }, [cursor]);

  const exportLink = (format: string) => withQuery("/v1/decisions/export", { ...apiQuery(filters), format });
  const filtered = FILTERS.some((name) => filters[name]);
  return (
    <section class="decisions">
      <h1>Decisions</h1>
      <p class="muted">
        Approvals decided: by whom, with what note and edit, and how long the agent waited. Newest first.
      </p>
      <FilterForm filters={filters} />
      <div class="toolbar">
        <span class="muted">{page ? `${count(page.decisions.length)} shown` : ""}</span>
        <span>
          Export these decisions: <a href={exportLink("jsonl")}>JSONL</a> · <a href={exportLink("csv")}>CSV</a>
        </span>
      </div>
      <ErrorBox error={error} />
      {page === null ? (
        error ? null : (
          <Loading />
        )
      ) : page.decisions.length === 0 ? (
        <p class="muted empty">
          {filtered ? "No decision matches these filters." : "No approval has been decided yet."}
        </p>
      ) : (
        <ul class="decision-list" aria-label="Decisions">
          {page.decisions.map((d) => (
            <DecisionItem key={d.approval_id} d={d} filters={filters} />
          ))}
        </ul>
      )}
      <Pager cursors={cursors} next={page?.next_cursor} onChange={setCursors} />
    </section>
  );
}

function FilterForm({ filters }: { filters: Filters }) {
  const [draft, setDraft] = useState<Filters>(filters);
  const field = (name: keyof Filters, label: string, type = "text") => (
    <label>
      {label}
      <input
        name={name}
        type={type}
        maxLength={type === "text" ? 200 : undefined}
        value={draft[name] ?? ""}
        onInput={(e) => setDraft({ ...draft, [name]: e.currentTarget.value })}
      />
    </label>
  );
  return (
    <form
      class="filters"
      role="search"
      aria-label="Filter decisions"
      onSubmit={(e) => {
        e.preventDefault();
        navigate(href(["decisions"], draft));
      }}
    >
      <label>
        Outcome
        <select value={draft.outcome ?? ""} onChange={(e) => setDraft({ ...draft, outcome: e.currentTarget.value })}>
          <option value="">any</option>
          {OUTCOMES.map((o) => (
            <option key={o}>{o}</option>
          ))}
        </select>
      </label>
      {field("decider", "Decided by")}
      {field("tool", "Tool")}
      {field("agent", "Agent")}
      {field("session", "Session")}
      {field("since", "Decided from", "datetime-local")}
      {field("until", "Decided before", "datetime-local")}
      <div class="actions">
        <button type="submit" class="primary">
          Filter
        </button>
        <a class="button" href="#/decisions">
          Clear filters
        </a>
      </div>
    </form>
  );
}

// Who decided, as people read it: "alice" for user:alice; the recorded form on hover and in filters.
function deciderText(d: Decision): string {
  const by = d.decided_by ?? "";
  if (d.outcome === "expired" && by === "system") return "no one (timed out)";
  if (d.outcome === "allowed_on_timeout") return "no one: let through when nobody decided in time";
  if (d.outcome === "cancelled" && by === d.agent) return "the agent";
  if (d.outcome === "cancelled" && by === "system") return "no one";
  return by.startsWith("user:") ? by.slice(5) : by;
}

// Approved by a person, then closed because the agent stopped waiting: both, not "cancelled by alice".
function approvedThenCancelled(d: Decision): boolean {
  const by = d.decided_by ?? "";
  return d.outcome === "cancelled" && by !== "system" && by !== d.agent && !!d.error;
}

// Closed by the server because the agent stopped waiting, before anyone decided: why, once (the note
// stays the approver's, and is empty here).
function closedUndecided(d: Decision): boolean {
  return d.outcome === "cancelled" && d.decided_by === "system" && !!d.error;
}

function DecisionItem({ d, filters }: { d: Decision; filters: Filters }) {
  const narrow = (more: Filters) => href(["decisions"], { ...filters, ...more });
  const heading = `decision-${d.approval_id}`;
  return (
    <li>
      <article class="decision" aria-labelledby={heading}>
        <header>
          <Badge kind={d.outcome}>{d.outcome === "allowed_on_timeout" ? "let through on timeout" : d.outcome}</Badge>
          {d.status !== d.outcome && d.status !== "approved" ? <Badge kind={d.status}>{d.status}</Badge> : null}
          <h2 id={heading}>
            <a href={narrow({ tool: d.tool })} title="only this tool's decisions">
              <code>
                <Text text={d.tool} />
              </code>
            </a>
          </h2>
          <span class="when">
            <Time us={d.decided_at_us} />
          </span>
        </header>
        <p class="decision-who">
          {d.decided_by ? (
            <>
              {approvedThenCancelled(d) ? "approved by " : "by "}
              <a href={narrow({ decider: d.decided_by })} title={visible(`only decisions by ${d.decided_by}`)}>
                <Text text={deciderText(d)} />
              </a>
              {approvedThenCancelled(d) || closedUndecided(d) ? (
                <>
                  {approvedThenCancelled(d) ? ", then cancelled: " : ", cancelled: "}
                  <Text text={d.error ?? ""} />
                </>
              ) : null}
              {d.votes.length > 1 ? (
                <span class="muted">
                  {" "}
                  (approvers: <Text text={d.votes.map((v) => v.replace(/^user:/, "")).join(", ")} />)
                </span>
              ) : null}
              {" · "}
            </>
          ) : null}
          <span class="waited" title="from the request to the decision">
            waited {millis(d.waited_us / 1000)}
          </span>
        </p>
        {d.note && !(closedUndecided(d) && d.note === d.error) ? (
          <blockquote class="decision-note">
            <Text text={d.note} />
          </blockquote>
        ) : null}
        {d.edited ? <Changes d={d} /> : null}
        {d.grant ? <GrantLine d={d} /> : null}
        <p class="decision-meta muted">
          agent{" "}
          <a href={narrow({ agent: d.agent })}>
            <Text text={d.agent} />
          </a>
          {d.session ? (
            <>
              {" · session "}
              <a href={narrow({ session: d.session })}>
                <Text text={d.session} />
              </a>{" "}
              (<a href={href(["sessions", d.session])}>replay</a>)
            </>
          ) : null}
          {" · "}
          <Text text={d.environment} /> · asked <Time us={d.requested_at_us} relative={false} />
          {" · "}
          <a href={href(["audit"], { call_id: d.call_id })}>audit records</a>
        </p>
        {d.reason ? (
          <p class="decision-reason muted">
            <Text text={d.reason} />
          </p>
        ) : null}
        {d.degraded.length ? (
          <p class="muted small">
            <Badge kind="hazard">shown differently</Badge> <Text text={d.degraded.join("; ")} />
          </p>
        ) : null}
      </article>
    </li>
  );
}

// Where a change is: `amount`, `items[0].price`, `meta["a b"]`.
export function pathText(path: (string | number)[]): string {
  return path
    .map((part, i) => {
      if (typeof part === "number") return `[${part}]`;
      if (i === 0 && part) return part;
      return /^[A-Za-z_][A-Za-z0-9_]*$/.test(part) ? `.${part}` : `[${JSON.stringify(part)}]`;
    })
    .join("");
}

function Side({ change, side }: { change: DecisionChange; side: "before" | "after" }) {
  const absent = side === "before" ? change.kind === "added" : change.kind === "removed";
  if (absent) return <span class="muted">(none)</span>;
  return (
    <code class="value" dir="ltr">
      <Value value={change[side]} quoted />
    </code>
  );
}

function Changes({ d }: { d: Decision }) {
  if (!d.changes.length) return <p class="muted small">Approved with an edit that changed nothing.</p>;
  return (
    <div class="decision-changes">
      <h3 class="visually-hidden">Edits</h3>
      <ul aria-label="Edited arguments">
        {d.changes.map((c, i) => (
          <li key={i}>
            <code class="change-path">
              <Text text={pathText(c.path)} />
            </code>{" "}
            <span class="old">
              <Side change={c} side="before" />
            </span>{" "}
            →{" "}
            <span class="new">
              <Side change={c} side="after" />
            </span>
            {c.redacted ? (
              <span class="badge badge-redacted" title="the value is redacted: it changed, what it is stays hidden">
                redacted
              </span>
            ) : null}
          </li>
        ))}
      </ul>
      {d.changes_left_out ? <p class="muted small">and {count(d.changes_left_out)} more changes</p> : null}
    </div>
  );
}

const SCOPES: Record<string, string> = { session: "this session", agent: "this agent", requester: "this person" };

function GrantLine({ d }: { d: Decision }) {
  const g = d.grant!;
  const session = g.scope === "session" ? (d.session ?? undefined) : undefined;
  const grants = href(["grants"], { agent: d.agent, session });
  const limits = [
    g.max_calls !== null ? `at most ${count(g.max_calls)} calls` : null,
    g.max_total !== null && g.total_arg ? `${g.total_arg} totalling at most ${g.max_total}` : null,
  ].filter(Boolean);
  return (
    <p class="decision-grant">
      <Badge kind={g.status}>{g.status}</Badge>{" "}
      {g.kind === "budget" ? (
        <>
          Extended the budget of {SCOPES[g.scope] ?? g.scope} by{" "}
          {[
            g.extend_usd !== null ? usd(g.extend_usd, true) : null,
            g.extend_tokens !== null ? `${count(g.extend_tokens)} tokens` : null,
          ]
            .filter(Boolean)
            .join(" and ")}
        </>
      ) : (
        <>
          Let similar calls of {SCOPES[g.scope] ?? g.scope} through until{" "}
          <Time us={g.expires_at_us} relative={false} />
          {limits.length ? `, ${limits.join(", ")}` : ""}
        </>
      )}{" "}
      <a href={grants}>the grant →</a>
    </p>
  );
}
