// Sessions: the recent ones, and one replayed step by step with running totals of cost and tokens.
import { useEffect, useMemo, useState } from "preact/hooks";
import { api, errorText } from "../api";
import { count, duration, usd, value, when } from "../format";
import { href, navigate, type Route } from "../router";
import type { AuditEvent, SessionSummary } from "../types";
import { ArgsTable, Badge, ErrorBox, Fact, Head, Loading, Spend } from "../ui/common";
import { TraceLink } from "../ui/trace";
import { HazardWarning, JsonText, Text } from "../ui/value";

export function Sessions({ route }: { route: Route }) {
  const id = route.path[1];
  return id ? <Replay key={id} id={id} step={Number(route.query.get("step") ?? "0")} /> : <Recent />;
}

function Recent() {
  const [sessions, setSessions] = useState<SessionSummary[] | null>(null);
  const [agent, setAgent] = useState("");
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    api<SessionSummary[]>("/v1/sessions", { query: { agent, limit: 200 } })
      .then(setSessions)
      .catch((e) => setError(errorText(e)));
  }, [agent]);
  return (
    <section>
      <h1>Sessions</h1>
      <form class="filters" role="search" onSubmit={(e) => e.preventDefault()}>
        <label>
          Agent
          <input name="agent" value={agent} onChange={(e) => setAgent(e.currentTarget.value.trim())} />
        </label>
      </form>
      <ErrorBox error={error} />
      {sessions === null ? (
        <Loading />
      ) : sessions.length === 0 ? (
        <p class="muted">No sessions recorded yet.</p>
      ) : (
        <div class="scroll">
          <table class="events">
            <Head cols={["session", "agent", "last activity", "tool calls", "blocked", "LLM calls", "cost"]} />
            <tbody>
              {sessions.map((s) => (
                <tr key={s.session}>
                  <td>
                    <a href={href(["sessions", s.session])}>
                      <Text text={s.session} />
                    </a>
                  </td>
                  <td>
                    <Text text={s.agent} />
                  </td>
                  <td class="nowrap">{when(s.last_at_us)}</td>
                  <td>{s.tool_calls}</td>
                  <td>{s.blocked}</td>
                  <td>{s.llm_calls}</td>
                  <td>
                    <Spend cost={s.cost_usd} calls={s.llm_calls} unpriced={s.unpriced_llm_calls} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}

interface Totals {
  cost: number;
  tokens: number;
  llm: number;
  calls: number;
  unpriced: number;
}

function totalsUpTo(events: AuditEvent[]): Totals[] {
  const out: Totals[] = [];
  let t: Totals = { cost: 0, tokens: 0, llm: 0, calls: 0, unpriced: 0 };
  for (const e of events) {
    if (e.kind === "llm.call") {
      t = {
        ...t,
        llm: t.llm + 1,
        tokens: t.tokens + Number(e.tokens ?? 0),
        cost: t.cost + (e.priced ? Number(e.cost_usd ?? 0) : 0),
        unpriced: t.unpriced + (e.priced ? 0 : 1),
      };
    } else if (e.kind === "tool_call.decided") t = { ...t, calls: t.calls + 1 };
    out.push(t);
  }
  return out;
}

function Replay({ id, step }: { id: string; step: number }) {
  const [events, setEvents] = useState<AuditEvent[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    api<AuditEvent[]>(`/v1/sessions/${encodeURIComponent(id)}`)
      .then(setEvents)
      .catch((e) => setError(errorText(e)));
  }, [id]);
  const totals = useMemo(() => totalsUpTo(events ?? []), [events]);
  const last = (events?.length ?? 1) - 1;
  const at = Math.min(Math.max(0, step), Math.max(0, last));
  const go = (to: number) => navigate(href(["sessions", id], { step: String(Math.min(Math.max(0, to), last)) }), true);

  useEffect(() => {
    const keys = (e: KeyboardEvent) => {
      const target = e.target as HTMLElement;
      if (target.closest("input, textarea, select")) return;
      if (e.key === "ArrowRight" || e.key === "j") go(at + 1);
      else if (e.key === "ArrowLeft" || e.key === "k") go(at - 1);
      else if (e.key === "Home") go(0);
      else if (e.key === "End") go(last);
      else return;
      e.preventDefault();
    };
    window.addEventListener("keydown", keys);
    return () => window.removeEventListener("keydown", keys);
  });

  if (error) return <ErrorBox error={error} />;
  if (!events) return <Loading />;
  const current = events[at];
  const t = totals[at];
  return (
    <section class="replay">
      <a class="back" href="#/sessions">
        ← Sessions
      </a>
      <h1>
        Session{" "}
        <code>
          <Text text={id} />
        </code>
      </h1>
      <p class="muted">
        {events[0].agent} · {when(events[0].at_us)} to {when(events[last].at_us)} ·{" "}
        {spanned(events[0], events[last])}
      </p>
      <div class="stepper" role="group" aria-label="Step through the session">
        <button type="button" onClick={() => go(0)} disabled={at === 0}>
          « First
        </button>
        <button type="button" onClick={() => go(at - 1)} disabled={at === 0}>
          ← Previous
        </button>
        <span class="step-count" aria-live="polite">
          step {at + 1} of {events.length}
        </span>
        <button type="button" onClick={() => go(at + 1)} disabled={at === last}>
          Next →
        </button>
        <button type="button" onClick={() => go(last)} disabled={at === last}>
          Last »
        </button>
      </div>
      <dl class="totals" aria-label="Totals so far">
        <div>
          <dt>cost so far</dt>
          <dd>
            <Spend cost={t.cost} calls={t.llm} unpriced={t.unpriced} />
          </dd>
        </div>
        <div>
          <dt>tokens so far</dt>
          <dd>{count(t.tokens)}</dd>
        </div>
        <div>
          <dt>LLM calls</dt>
          <dd>{t.llm}</dd>
        </div>
        <div>
          <dt>tool calls</dt>
          <dd>{t.calls}</dd>
        </div>
      </dl>
      <div class="replay-body">
        <ol class="timeline" aria-label="Timeline">
          {events.map((e, i) => (
            <li key={e.seq} class={i === at ? "current" : i > at ? "future" : ""}>
              <button type="button" class="link" onClick={() => go(i)} aria-current={i === at ? "step" : undefined}>
                <span class="muted">{when(e.at_us).slice(11, 19)}</span> <Text text={label(e)} />
              </button>
            </li>
          ))}
        </ol>
        <Step event={current} />
      </div>
    </section>
  );
}

// A record the store could not read has no time: its span is unknown.
function spanned(first: AuditEvent, end: AuditEvent): string {
  if (first.at_us === undefined || end.at_us === undefined) return "—";
  return duration((end.at_us - first.at_us) / 1e6);
}

function label(e: AuditEvent): string {
  switch (e.kind) {
    case "llm.call":
      return `LLM ${value(e.model)}`;
    case "tool_call.decided":
      return `${value(e.tool)}: ${value(e.decision)}`;
    case "tool_call.finished":
      return `${value(e.tool)} ran: ${value(e.decision)}`;
    case "approval.requested":
      return `approval requested for ${value(e.tool)}`;
    case "approval.decided":
      return `${value(e.decision)} by ${value(e.by)}`;
    case "approval.expired":
      return `approval ${value(e.decision ?? "expired")}`;
    default:
      return e.kind ?? "unreadable record";
  }
}

function Step({ event: e }: { event: AuditEvent }) {
  return (
    <article class="step" aria-label="This step">
      <h2>
        <code>{e.kind}</code> <span class="muted">{when(e.at_us)}</span>
      </h2>
      {e.kind === "llm.call" ? (
        <dl class="facts">
          <dt>Model</dt>
          <dd>
            {value(e.model)} {e.provider ? <span class="muted">{value(e.provider)}</span> : null}
          </dd>
          <dt>Tokens</dt>
          <dd>
            {count(Number(e.input_tokens ?? 0))} in ({count(Number(e.cached_input_tokens ?? 0))} cached),{" "}
            {count(Number(e.output_tokens ?? 0))} out
            {Number(e.reasoning_tokens ?? 0) ? `, ${count(Number(e.reasoning_tokens))} reasoning` : ""}
          </dd>
          <dt>Cost</dt>
          <dd>{e.priced ? usd(String(e.cost_usd)) : <Badge kind="unpriced">unpriced model</Badge>}</dd>
          <dt>Latency</dt>
          <dd>{e.latency_ms === null || e.latency_ms === undefined ? "—" : `${value(e.latency_ms)} ms`}</dd>
        </dl>
      ) : null}
      {e.kind?.startsWith("tool_call") || e.kind?.startsWith("approval") ? (
        <dl class="facts">
          <dt>Tool</dt>
          <dd>
            <code>
              <Text text={value(e.tool)} />
            </code>
          </dd>
          <Fact label={e.kind === "tool_call.decided" ? "Decision" : "Status"} when={e.decision}>
            <Badge kind={e.decision ?? ""}>{e.decision}</Badge> <Text text={e.reason ?? ""} />
          </Fact>
          <Fact label="Rules" when={e.rule_ids?.length}>{(e.rule_ids ?? []).join(", ")}</Fact>
          <Fact label="Decided by" when={e.by}>{value(e.by)}</Fact>
          <Fact label="Agent waited" when={e.waited_ms !== undefined}>{duration(Number(e.waited_ms) / 1000)}</Fact>
          <Fact label="Note" when={e.note}>
            <Text text={value(e.note)} />
          </Fact>
          <Fact label="Ran for" when={e.duration_ms !== undefined}>{value(e.duration_ms)} ms</Fact>
          {e.error ? (
            <>
              <dt>Error</dt>
              <dd class="error">
                <Text text={e.error} />
              </dd>
            </>
          ) : null}
          <Fact label="Approval" when={e.approval_id}>
            <a href={href(["approvals", String(e.approval_id)])}>{String(e.approval_id)}</a>
          </Fact>
        </dl>
      ) : null}
      <HazardWarning value={e} what="step" />
      {e.args ? (
        <>
          <h3>Arguments</h3>
          <ArgsTable args={e.args} redacted={e.args_redacted ?? []} />
        </>
      ) : null}
      {e.edited_args ? (
        <>
          <h3>Edited by the approver to</h3>
          <ArgsTable args={e.edited_args as Record<string, unknown>} />
        </>
      ) : null}
      {e.result !== undefined ? (
        <>
          <h3>Result</h3>
          <JsonText value={e.result} />
        </>
      ) : null}
      <p class="record-links">
        <a href={href(["audit", e.seq])}>Record {e.seq} in the audit log →</a>
        <TraceLink trace={e.trace} />
      </p>
    </article>
  );
}
