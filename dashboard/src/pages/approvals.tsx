// The approvals inbox: pending approvals live from the server's event stream, and one approval
// in detail with Approve, Deny with a note, Approve with edited arguments, and Approve with a
// grant of similar calls or more budget (when the rule or the spent budget that asked allows it).
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { api, ApiError, errorText } from "../api";
import { ago, count, lasting, when } from "../format";
import { href, type Route } from "../router";
import type { Approval, AuditEvent, ExtendIn, GrantIn, GrantLimits, Signed } from "../types";
import { ArgsTable, Badge, Countdown, ErrorBox, Fact, Loading, useNow } from "../ui/common";
import { TraceFact } from "../ui/trace";
import { HazardWarning, hasHazards, JsonText, Text } from "../ui/value";
import { visible } from "../visible";
import { EditArgs } from "./edit_args";
import { ExtendForm, GrantForm, type Refusal, refusalOf } from "./grant_form";

const FINAL = new Set(["denied", "expired", "cancelled", "executed", "failed"]);

function useLivePending(): { items: Approval[] | null; live: boolean } {
  const [items, setItems] = useState<Approval[] | null>(null);
  const [live, setLive] = useState(false);
  useEffect(() => {
    const source = new EventSource("/v1/approvals/stream");
    source.addEventListener("pending", (event) => {
      setItems(JSON.parse((event as MessageEvent<string>).data) as Approval[]);
      setLive(true);
    });
    source.onerror = () => setLive(false); // EventSource reconnects by itself
    return () => source.close();
  }, []);
  return { items, live };
}

type Order = "expiry" | "newest";

export function Approvals({ route, me }: { route: Route; me: Signed }) {
  const { items, live } = useLivePending();
  const [order, setOrder] = useState<Order>("expiry");
  const selected = route.path[1];
  const listRef = useRef<HTMLUListElement>(null);
  const sorted = useMemo(() => {
    const list = [...(items ?? [])];
    list.sort((a, b) => (order === "expiry" ? a.expires_at_us - b.expires_at_us : b.created_at_us - a.created_at_us));
    return list;
  }, [items, order]);

  useEffect(() => {
    document.title = items?.length ? `(${items.length}) Approvals · Clearance` : "Approvals · Clearance";
  }, [items]);

  // Arrow keys move through the list; Enter (the link's own) opens one.
  const onKeyDown = (event: KeyboardEvent) => {
    if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
    const links = Array.from(listRef.current?.querySelectorAll<HTMLAnchorElement>("a") ?? []);
    const at = links.indexOf(document.activeElement as HTMLAnchorElement);
    const next = links[Math.min(links.length - 1, Math.max(0, at + (event.key === "ArrowDown" ? 1 : -1)))];
    if (next) {
      event.preventDefault();
      next.focus();
    }
  };

  return (
    <div class={selected ? "split has-detail" : "split"}>
      <section class="inbox" aria-label="Pending approvals">
        <div class="inbox-head">
          <h1>
            Pending <span class="count">{items?.length ?? ""}</span>
          </h1>
          <span class={live ? "live on" : "live"} role="status">
            {live ? "live" : "reconnecting…"}
          </span>
        </div>
        <label class="inline">
          Order
          <select value={order} onChange={(e) => setOrder(e.currentTarget.value as Order)}>
            <option value="expiry">nearest expiry first</option>
            <option value="newest">newest first</option>
          </select>
        </label>
        {items === null ? (
          <Loading />
        ) : sorted.length === 0 ? (
          <p class="muted empty">Nothing is waiting for a decision.</p>
        ) : (
          <ul class="items" ref={listRef} onKeyDown={onKeyDown}>
            {sorted.map((a) => (
              <li key={a.id}>
                <a
                  href={href(["approvals", a.id])}
                  class={a.id === selected ? "item selected" : "item"}
                  aria-current={a.id === selected ? "true" : undefined}
                >
                  <span class="item-title">
                    <code>
                      <Text text={a.tool} />
                    </code>{" "}
                    <span class="muted">by</span> {a.agent}
                    {hasHazards([a.tool, a.args]) ? <Badge kind="hazard">hidden characters</Badge> : null}
                    {a.waiter_gone ? <Badge kind="waiter_gone">waiter gone</Badge> : null}
                  </span>
                  <span class="item-reason">
                    <Text text={a.reason} />
                  </span>
                  <span class="item-meta">
                    <Countdown until_us={a.expires_at_us} /> · requested {ago(a.created_at_us)}
                  </span>
                </a>
              </li>
            ))}
          </ul>
        )}
      </section>
      {selected ? (
        <section class="detail" aria-label="Approval">
          <a class="back" href="#/approvals">
            ← All pending
          </a>
          <ApprovalDetail key={selected} id={selected} me={me} />
        </section>
      ) : null}
    </div>
  );
}

function ApprovalDetail({ id, me }: { id: string; me: Signed }) {
  const [approval, setApproval] = useState<Approval | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [mode, setMode] = useState<"view" | "deny" | "edit" | "grant" | "extend">("view");
  const [note, setNote] = useState("");
  const [busy, setBusy] = useState(false);
  const [refusal, setRefusal] = useState<Refusal | null>(null);
  const [granted, setGranted] = useState<"grant" | "extend" | null>(null);
  const noteRef = useRef<HTMLTextAreaElement>(null);
  useEffect(() => {
    if (mode === "deny") noteRef.current?.focus();
  }, [mode]);

  // Follow the approval until it ends: decided elsewhere, expired, or run with a result.
  useEffect(() => {
    const abort = new AbortController();
    let first = true;
    (async () => {
      for (;;) {
        try {
          const found = await api<Approval>(`/v1/approvals/${encodeURIComponent(id)}`, {
            query: first ? {} : { wait: 25, until: "finished" },
            signal: abort.signal,
          });
          first = false;
          setApproval(found);
          setError(null);
          if (FINAL.has(found.status)) return;
        } catch (e) {
          if (abort.signal.aborted) return;
          setError(errorText(e));
          await new Promise((resolve) => window.setTimeout(resolve, 3000));
        }
      }
    })();
    return () => abort.abort();
  }, [id]);

  if (approval === null) return error ? <ErrorBox error={error} /> : <Loading />;

  const decide = async (
    approve: boolean,
    more: { args?: Record<string, unknown>; grant?: GrantIn; extend?: ExtendIn } = {},
  ) => {
    setBusy(true);
    setError(null);
    setRefusal(null);
    try {
      const body: Record<string, unknown> = { ...more };
      if (note.trim()) body.note = note.trim();
      setApproval(
        await api<Approval>(`/v1/approvals/${encodeURIComponent(id)}/${approve ? "approve" : "deny"}`, {
          method: "POST",
          body,
        }),
      );
      if (more.grant) setGranted("grant");
      if (more.extend) setGranted("extend");
      setMode("view");
    } catch (e) {
      // A refused grant or extension: its problems beside the form, which stays open (the approval is still pending).
      if (e instanceof ApiError && e.status === 422 && (more.grant || more.extend))
        setRefusal(refusalOf(e, more.grant ? "grant" : "extend"));
      else setError(errorText(e));
    } finally {
      setBusy(false);
    }
  };
  const open = (next: typeof mode) => {
    setRefusal(null);
    setMode(next);
  };

  const pending = approval.status === "pending";
  const refused = whyNot(approval, me);
  const mayDecide = refused === null;
  return (
    <article class="approval">
      <header>
        <h2>
          <code>
            <Text text={approval.tool} />
          </code>
        </h2>
        <Badge kind={approval.status}>{approval.status}</Badge>
        {approval.waiter_gone ? <Badge kind="waiter_gone">waiter gone</Badge> : null}
        {pending ? <Countdown until_us={approval.expires_at_us} /> : null}
      </header>
      <HazardWarning value={approval.args} />
      {approval.waiter_gone ? (
        <p class="error waiter-gone" role="alert">
          {waiterGone(approval)}
        </p>
      ) : null}
      <dl class="facts">
        <dt>Agent</dt>
        <dd>
          {approval.agent} <span class="muted">({approval.environment})</span>
        </dd>
        <dt>Session</dt>
        <dd>
          {approval.session ? (
            <a href={href(["sessions", approval.session])}>
              <Text text={approval.session} />
            </a>
          ) : (
            "—"
          )}
        </dd>
        <dt>Rule</dt>
        <dd>{approval.rule_ids.length ? approval.rule_ids.map((r) => <code key={r}>{r} </code>) : "—"}</dd>
        <dt>Reason</dt>
        <dd>
          <Text text={approval.reason} />
        </dd>
        <Fact label="May grant" when={approval.grant_limits}>
          {approval.grant_limits ? limitsText(approval.grant_limits) : null}
        </Fact>
        <Fact label="Budget" when={approval.budget}>
          {approval.budget === "session" ? "this session's" : "this agent's"} budget is spent; approving may extend it
        </Fact>
        <dt>Approvers</dt>
        <dd>
          {approval.approvers.join(", ") || "any approver"}
          {approval.quorum > 1 ? ` (${approval.votes.length} of ${approval.quorum} votes)` : ""}
        </dd>
        <dt>Requested</dt>
        <dd>
          {when(approval.created_at_us)}; expires {when(approval.expires_at_us)} ({approval.on_timeout} on timeout)
        </dd>
        <TraceFact trace={approval.trace} />
      </dl>
      <h3>Arguments</h3>
      <ArgsTable args={approval.args} />
      <ErrorBox error={error} />
      {pending && refused ? <p class="muted">{refused}</p> : null}
      {pending && mayDecide && mode === "view" ? (
        <div class="actions sticky" role="group" aria-label="Decide">
          <button type="button" class="primary" disabled={busy} onClick={() => decide(true)}>
            Approve
          </button>
          {approval.grant_limits ? (
            <button type="button" disabled={busy} onClick={() => open("grant")}>
              Approve and grant…
            </button>
          ) : null}
          {approval.budget ? (
            <button type="button" disabled={busy} onClick={() => open("extend")}>
              Approve and extend…
            </button>
          ) : null}
          <button type="button" disabled={busy} onClick={() => open("edit")}>
            Edit arguments…
          </button>
          <button type="button" class="danger" disabled={busy} onClick={() => open("deny")}>
            Deny…
          </button>
        </div>
      ) : null}
      {pending && mode === "deny" ? (
        <form
          class="deny"
          onSubmit={(e) => {
            e.preventDefault();
            void decide(false);
          }}
        >
          <label>
            Note for the agent (why not)
            <textarea
              name="note"
              maxLength={2000}
              value={note}
              ref={noteRef}
              onInput={(e) => setNote(e.currentTarget.value)}
            />
          </label>
          <div class="actions sticky">
            <button type="submit" class="danger" disabled={busy}>
              Deny
            </button>
            <button type="button" onClick={() => setMode("view")}>
              Cancel
            </button>
          </div>
        </form>
      ) : null}
      {pending && mode === "edit" ? (
        <EditArgs
          args={approval.args}
          busy={busy}
          note={note}
          onNote={setNote}
          onCancel={() => setMode("view")}
          onConfirm={(changed) => decide(true, { args: changed })}
        />
      ) : null}
      {pending && mode === "grant" && approval.grant_limits ? (
        <GrantForm
          approval={approval}
          limits={approval.grant_limits}
          busy={busy}
          note={note}
          refusal={refusal}
          onNote={setNote}
          onCancel={() => open("view")}
          onConfirm={(grant) => decide(true, { grant })}
        />
      ) : null}
      {pending && mode === "extend" && approval.budget ? (
        <ExtendForm
          approval={approval}
          budget={approval.budget}
          busy={busy}
          note={note}
          refusal={refusal}
          onNote={setNote}
          onCancel={() => open("view")}
          onConfirm={(extend) => decide(true, { extend })}
        />
      ) : null}
      {granted ? (
        <p class="ok" role="status">
          {granted === "grant" ? "Similar calls are granted" : "The budget is extended"}:{" "}
          <a href={href(["grants"], { agent: approval.agent, session: approval.session ?? undefined })}>
            see Grants
          </a>
          .
        </p>
      ) : null}
      {!pending ? <Outcome approval={approval} /> : null}
      {approval.session ? <Earlier session={approval.session} before_us={approval.created_at_us} /> : null}
    </article>
  );
}

// What the rule lets an approver grant, in a line: "session or agent, up to 8 hours, at most 20 calls".
function limitsText(limits: GrantLimits): string {
  const parts = [limits.scopes.join(" or "), `up to ${lasting(limits.max_duration)}`];
  if (limits.max_calls !== null) parts.push(`at most ${count(limits.max_calls)} calls`);
  for (const [name, most] of Object.entries(limits.max_total ?? {})) parts.push(`${visible(name)} totalling at most ${most}`);
  return parts.join(", ");
}

// Why this person may not decide it (the server's own rule, so the page does not offer what
// the server would refuse), or null.
function whyNot(a: Approval, me: Signed): string | null {
  if (!me.roles.includes("approver")) return "Only approvers decide approvals.";
  if (a.requested_by === `user:${me.username}`) return "You requested this call, so someone else decides it.";
  const groups = a.escalated_at_us ? a.escalate_to : a.approvers;
  if (!groups.length) return null;
  const allowed = groups.some(
    (g) => (g.startsWith("role:") && me.roles.includes(g.slice(5))) || g === `user:${me.username}`,
  );
  return allowed ? null : `Only ${groups.join(", ")} may decide this approval.`;
}

// What a decider must know about an approval whose waiting process stopped.
function waiterGone(a: Approval): string {
  const stopped = `Waiter gone: the process waiting for this approval stopped at ${when(a.waiter_seen_at_us ?? 0)}.`;
  return a.resumable
    ? `${stopped} Approved, the call runs once in a "clearance worker" importing its tool.`
    : `${stopped} Nothing can run the call: approving it does not run it, and it is cancelled at its expiry.`;
}

function Outcome({ approval }: { approval: Approval }) {
  const now = useNow();
  return (
    <section class="outcome" aria-live="polite">
      <h3>Outcome</h3>
      <p>
        <Badge kind={approval.status}>{approval.status}</Badge>{" "}
        {approval.decided_by ? (
          <>
            by <strong>{approval.decided_by}</strong> {approval.decided_at_us ? ago(approval.decided_at_us, now) : ""}
          </>
        ) : null}
      </p>
      {approval.note ? (
        <p>
          Note:{" "}
          <q>
            <Text text={approval.note} />
          </q>
        </p>
      ) : null}
      {approval.edited_args ? (
        <>
          <h4>Approved with edited arguments</h4>
          <HazardWarning value={approval.edited_args} what="edited call" />
          <ArgsTable args={approval.edited_args} />
        </>
      ) : null}
      {approval.status === "approved" && approval.waiter_gone ? null : approval.status === "approved" ? (
        <p class="muted">Waiting for the agent to run it…</p>
      ) : approval.status === "cancelled" && approval.error ? (
        <p class="error">
          <Text text={approval.error} />
        </p>
      ) : approval.status === "executed" ? (
        <>
          <h4>Result</h4>
          <JsonText value={approval.result} />
        </>
      ) : approval.status === "failed" ? (
        <p class="error">
          The call failed: <Text text={approval.error ?? ""} />
        </p>
      ) : null}
    </section>
  );
}

function Earlier({ session, before_us }: { session: string; before_us: number }) {
  const [events, setEvents] = useState<AuditEvent[] | null>(null);
  useEffect(() => {
    api<AuditEvent[]>(`/v1/sessions/${encodeURIComponent(session)}`)
      .then((all) => setEvents(all.filter((e) => e.at_us !== undefined && e.at_us < before_us).slice(-15)))
      .catch(() => setEvents([]));
  }, [session, before_us]);
  if (!events?.length) return null;
  return (
    <section class="earlier">
      <h3>Earlier in this session</h3>
      <ol class="timeline compact">
        {events.map((e) => (
          <li key={e.seq}>
            <span class="muted">{when(e.at_us)}</span> <code>{e.kind}</code>{" "}
            {e.tool ? (
              <code>
                <Text text={e.tool} />
              </code>
            ) : null} {e.decision ? <Badge kind={e.decision}>{e.decision}</Badge> : null}
            {e.kind === "llm.call" ? <span class="muted"> {String(e.model)}</span> : null}
          </li>
        ))}
      </ol>
      <a href={href(["sessions", session])}>Replay the whole session →</a>
    </section>
  );
}
