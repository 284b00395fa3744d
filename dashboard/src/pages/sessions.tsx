// Sessions: the recent ones, and one replayed step by step with running totals of cost and tokens,
// on a timeline of its model calls, tool calls and approval waits.
import { memo } from "preact/compat";
import { useCallback, useEffect, useLayoutEffect, useMemo, useRef, useState } from "preact/hooks";
import { api, errorText } from "../api";
import { count, duration, millis, moment, tokens, usd, value, when } from "../format";
import { href, navigate, type Route } from "../router";
import type { AuditEvent, SessionSummary } from "../types";
import { ArgsTable, Badge, ErrorBox, Fact, Head, Loading, Spend, Time } from "../ui/common";
import { TraceLink } from "../ui/trace";
import { HazardWarning, JsonText, Text } from "../ui/value";
import { costOf, priced, Timeline } from "./session_timeline";

export function Sessions({ route }: { route: Route }) {
  const id = route.path[1];
  return id ? <Replay key={id} id={id} step={Math.trunc(Number(route.query.get("step"))) || 0} /> : <Recent />;
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
                  <td class="nowrap">
                    <Time us={s.last_at_us} />
                  </td>
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
        tokens: t.tokens + (number(e.tokens) ?? 0),
        cost: t.cost + costOf(e),
        unpriced: t.unpriced + (priced(e) ? 0 : 1),
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
    // The id as a query parameter: any characters, "/", "%" and ".." too, reach the server intact.
    api<AuditEvent[]>("/v1/replay", { query: { session: id } })
      .then(setEvents)
      .catch((e) => setError(errorText(e)));
  }, [id]);
  const totals = useMemo(() => totalsUpTo(events ?? []), [events]);
  const cumulative = useMemo(() => totals.map((t) => t.cost), [totals]);
  const last = (events?.length ?? 1) - 1;
  const at = Math.min(Math.max(0, step), Math.max(0, last));
  // Where the replay is going: keys pressed faster than a long session redraws each count from it.
  const pos = useRef(at);
  pos.current = at;
  const go = useCallback(
    (to: number) => {
      pos.current = Math.min(Math.max(0, to), last);
      navigate(href(["sessions", id], { step: String(pos.current) }), true);
    },
    [id, last],
  );

  // Listening from the moment the steps are drawn (an effect would start a frame later, and a key
  // pressed at once would be lost).
  useLayoutEffect(() => {
    const keys = (e: KeyboardEvent) => {
      const target = e.target as HTMLElement;
      if (target.closest("input, textarea, select")) return;
      if (e.key === "ArrowRight" || e.key === "j") go(pos.current + 1);
      else if (e.key === "ArrowLeft" || e.key === "k") go(pos.current - 1);
      else if (e.key === "Home") go(0);
      else if (e.key === "End") go(last);
      else return;
      e.preventDefault();
    };
    window.addEventListener("keydown", keys);
    return () => window.removeEventListener("keydown", keys);
  }, [go, last]);

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
        <Text text={value(events[0].agent)} /> · <Time us={events[0].at_us} /> to <Time us={events[last].at_us} relative={false} /> ·{" "}
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
      <Timeline events={events} at={at} cumulative={cumulative} go={go} />
      <div class="replay-body">
        <ol class="timeline" aria-label="Steps">
          {events.map((e, i) => (
            <StepItem key={e.seq} event={e} index={i} state={i === at ? "current" : i > at ? "future" : ""} go={go} />
          ))}
        </ol>
        <Step event={current} />
      </div>
    </section>
  );
}

// One step in the list; drawn again only when it becomes or stops being the current or a later one.
const StepItem = memo(function StepItem({
  event: e,
  index,
  state,
  go,
}: {
  event: AuditEvent;
  index: number;
  state: string;
  go: (step: number) => void;
}) {
  return (
    <li class={state}>
      <button type="button" class="link" onClick={() => go(index)} aria-current={state === "current" ? "step" : undefined}>
        <span class="step-time">{clock(e.at_us)}</span> <Text text={label(e)} />
      </button>
    </li>
  );
});

// A field of a record as a finite number, or null (records are open: anything may be there).
function number(v: unknown): number | null {
  const n = typeof v === "number" ? v : typeof v === "string" && v.trim() !== "" ? Number(v) : NaN;
  return Number.isFinite(n) ? n : null;
}

// The time of day of a step, local ("09:14:03"); its date is in the header.
function clock(us: number | undefined): string {
  if (us === undefined) return "—";
  return moment(us) === null ? when(us) : when(us).slice(11, 19);
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
  const latency = number(e.latency_ms);
  const waited = number(e.waited_ms);
  const ran = number(e.duration_ms);
  const [input, output, cached, reasoning] = [e.input_tokens, e.output_tokens, e.cached_input_tokens, e.reasoning_tokens].map(number);
  return (
    <article class="step" aria-label="This step">
      <h2>
        <code>{e.kind ?? "unreadable record"}</code> <Time us={e.at_us} />
      </h2>
      {e.kind === "llm.call" ? (
        <dl class="facts">
          <Fact label="Model" when={e.model !== undefined && e.model !== null}>
            <Text text={value(e.model)} />
            {e.provider ? (
              <span class="muted">
                {" "}
                <Text text={value(e.provider)} />
              </span>
            ) : null}
          </Fact>
          <Fact label="Tokens" when={input !== null || output !== null}>
            {tokens(input)} in{cached ? ` (${count(cached)} cached)` : ""}, {tokens(output)} out
            {reasoning ? `, ${tokens(reasoning)} reasoning` : ""}
          </Fact>
          <Fact label="Cost" when={true}>
            {priced(e) ? usd(costOf(e)) : <Badge kind="unpriced">unpriced model</Badge>}
          </Fact>
          <Fact label="Latency" when={latency !== null}>
            {millis(latency)}
          </Fact>
        </dl>
      ) : null}
      {e.kind?.startsWith("tool_call") || e.kind?.startsWith("approval") ? (
        <dl class="facts">
          <Fact label="Tool" when={e.tool}>
            <code>
              <Text text={value(e.tool)} />
            </code>
          </Fact>
          <Fact label={e.kind === "tool_call.decided" ? "Decision" : "Status"} when={e.decision}>
            <Badge kind={value(e.decision)}>
              <Text text={value(e.decision)} />
            </Badge>{" "}
            {e.reason ? <Text text={value(e.reason)} /> : null}
          </Fact>
          <Fact label="Rules" when={Array.isArray(e.rule_ids) && e.rule_ids.length}>
            <Text text={(e.rule_ids ?? []).map(value).join(", ")} />
          </Fact>
          <Fact label="Decided by" when={e.by}>
            <Text text={value(e.by)} />
          </Fact>
          <Fact label="Agent waited" when={waited !== null}>
            {millis(waited)}
          </Fact>
          <Fact label="Note" when={e.note}>
            <Text text={value(e.note)} />
          </Fact>
          <Fact label="Ran for" when={ran !== null}>
            {millis(ran)}
          </Fact>
          <Fact label="Error" when={e.error}>
            <span class="error">
              <Text text={value(e.error)} />
            </span>
          </Fact>
          <Fact label="Approval" when={typeof e.approval_id === "string" && e.approval_id}>
            <a href={href(["approvals", value(e.approval_id)])}>
              <Text text={value(e.approval_id)} />
            </a>
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
