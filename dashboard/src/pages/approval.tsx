// One approval in detail: Approve, Deny with a note, Approve with edited arguments, and Approve
// with a grant of similar calls or more budget (when the rule or the spent budget that asked
// allows it); then its outcome, followed until the call has run. What happened earlier in its
// session below.
import { useEffect, useRef, useState } from "preact/hooks";
import { api, ApiError, errorText } from "../api";
import { ago, count, lasting, when } from "../format";
import { href } from "../router";
import type { Approval, AuditEvent, ExtendIn, GrantIn, GrantLimits, Signed } from "../types";
import { ArgsTable, Badge, Countdown, ErrorBox, Fact, Loading, useNow } from "../ui/common";
import { TraceFact } from "../ui/trace";
import { HazardWarning, JsonText, Text } from "../ui/value";
import { visible } from "../visible";
import { EditArgs } from "./edit_args";
import { ExtendForm, GrantForm, type Refusal, refusalOf } from "./grant_form";
import { Environment } from "./inbox_item";

const FINAL = new Set(["denied", "expired", "cancelled", "executed", "failed"]);

// What the inbox's shortcuts call on the open approval (set while it can be decided).
export interface Shortcuts {
  approve: () => void;
  deny: () => void;
  edit: () => void;
}

export function ApprovalDetail({
  id,
  me,
  connected,
  shortcuts,
  focusTitle,
  onDecided,
}: {
  id: string;
  me: Signed;
  connected: boolean;
  shortcuts: { current: Shortcuts | null };
  focusTitle: { current: string | null };
  onDecided: (a: Approval, advance: boolean) => boolean; // whether the next approval opens
}) {
  const [approval, setApproval] = useState<Approval | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [mode, setMode] = useState<"view" | "deny" | "edit" | "grant" | "extend">("view");
  const [note, setNote] = useState("");
  const [busy, setBusy] = useState(false);
  const [refusal, setRefusal] = useState<Refusal | null>(null);
  const [granted, setGranted] = useState<"grant" | "extend" | null>(null);
  const noteRef = useRef<HTMLTextAreaElement>(null);
  const titleRef = useRef<HTMLHeadingElement>(null);
  const actionsRef = useRef<HTMLDivElement>(null);
  const outcomeRef = useRef<HTMLElement>(null);
  const opened = useRef(false);
  // Focus follows what opens: the note to deny with; back on the buttons when a form is left.
  useEffect(() => {
    if (mode === "deny") noteRef.current?.focus();
    else if (mode === "view" && opened.current) actionsRef.current?.querySelector("button")?.focus();
    opened.current = mode !== "view";
  }, [mode]);
  useEffect(
    () => () => {
      shortcuts.current = null;
    },
    [],
  );
  // Opened from the keyboard with the list out of sight (a phone): the title takes the focus.
  const loaded = approval !== null;
  useEffect(() => {
    if (loaded && focusTitle.current === id) {
      focusTitle.current = null;
      titleRef.current?.focus();
    }
  }, [loaded]);

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

  // While the server cannot be reached the banner above says so: no second error here, and no "Loading…".
  if (approval === null)
    return !connected ? (
      <p class="muted">This approval shows when the server is back.</p>
    ) : error ? (
      <ErrorBox error={error} />
    ) : (
      <Loading />
    );

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
      const decided = await api<Approval>(`/v1/approvals/${encodeURIComponent(id)}/${approve ? "approve" : "deny"}`, {
        method: "POST",
        body,
      });
      setApproval(decided);
      if (more.grant) setGranted("grant");
      if (more.extend) setGranted("extend");
      opened.current = false; // the buttons are gone: focus goes to the next approval, or to this one's outcome
      setMode("view");
      // With a grant or an extension given, its confirmation stays in sight.
      if (!onDecided(decided, !more.grant && !more.extend)) window.setTimeout(() => outcomeRef.current?.focus());
    } catch (e) {
      // A refused grant or extension: its problems beside the form, which stays open (the approval is still pending).
      if (e instanceof ApiError && e.status === 422 && (more.grant || more.extend))
        setRefusal(refusalOf(e, more.grant ? "grant" : "extend"));
      else setError(errorText(e));
    } finally {
      setBusy(false);
    }
  };
  // A claim whose process died running the call: a person says whether the tool ran.
  const resolve = async (ran: boolean) => {
    setBusy(true);
    setError(null);
    try {
      const body: Record<string, unknown> = { ran };
      if (note.trim()) body.note = note.trim();
      setApproval(await api<Approval>(`/v1/approvals/${encodeURIComponent(id)}/resolve`, { method: "POST", body }));
    } catch (e) {
      setError(errorText(e));
    } finally {
      setBusy(false);
    }
  };
  const open = (next: typeof mode) => {
    setRefusal(null);
    setMode(next);
  };

  const pending = approval.status === "pending";
  const mayDecide = approval.may_decide;
  const refused = mayDecide ? null : (whyNot(approval, me) ?? "You voted for it already; it waits for more approvers.");
  const offer = pending && mayDecide && mode === "view";
  const stopped = busy || !connected;
  shortcuts.current =
    offer && !stopped
      ? { approve: () => void decide(true), deny: () => open("deny"), edit: () => open("edit") }
      : null;
  return (
    <article class="approval">
      <header>
        <h2 ref={titleRef} tabIndex={-1} id="approval-title">
          <code>
            <Text text={approval.tool} />
          </code>
        </h2>
        <Environment name={approval.environment} />
        <Badge kind={approval.status}>{approval.status}</Badge>
        {approval.waiter_gone ? <Badge kind="waiter_gone">waiter gone</Badge> : null}
        {approval.claim_dead ? <Badge kind="waiter_gone">claimed by a dead process</Badge> : null}
        {pending ? <Countdown until_us={approval.expires_at_us} /> : null}
      </header>
      <HazardWarning value={approval.args} />
      {approval.waiter_gone ? (
        <p class="error waiter-gone" role="alert">
          {waiterGone(approval)}
        </p>
      ) : null}
      {approval.claim_dead ? (
        <div class="error claim-dead" role="alert">
          <p>{claimDead(approval)}</p>
          {me.roles.includes("approver") ? (
            <div class="actions" role="group" aria-label="Resolve">
              <button type="button" disabled={stopped} onClick={() => resolve(false)}>
                It did not run (run it again)
              </button>
              <button type="button" disabled={stopped} onClick={() => resolve(true)}>
                It ran
              </button>
            </div>
          ) : null}
        </div>
      ) : null}
      <ErrorBox error={connected ? error : null} />
      {pending && refused ? <p class="muted">{refused}</p> : null}
      {offer ? (
        <div class="actions sticky decide" role="group" aria-label="Decide" ref={actionsRef}>
          <button type="button" class="primary" disabled={stopped} onClick={() => decide(true)} aria-keyshortcuts="a">
            Approve
          </button>
          <button type="button" class="danger" disabled={stopped} onClick={() => open("deny")} aria-keyshortcuts="d">
            Deny…
          </button>
          <button type="button" disabled={stopped} onClick={() => open("edit")} aria-keyshortcuts="e">
            Edit arguments…
          </button>
          {approval.grant_limits ? (
            <button type="button" disabled={stopped} onClick={() => open("grant")}>
              Approve and grant…
            </button>
          ) : null}
          {approval.budget ? (
            <button type="button" disabled={stopped} onClick={() => open("extend")}>
              Approve and extend…
            </button>
          ) : null}
          {!connected ? <span class="muted">Deciding is paused: the server cannot be reached.</span> : null}
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
              aria-describedby="deny-keys"
              onInput={(e) => setNote(e.currentTarget.value)}
              onKeyDown={(e) => {
                if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && connected && !busy) {
                  e.preventDefault();
                  void decide(false);
                }
                if (e.key === "Escape") setMode("view");
              }}
            />
          </label>
          <span class="muted" id="deny-keys">
            Ctrl+Enter denies, Escape goes back.
          </span>
          <div class="actions sticky">
            <button type="submit" class="danger" disabled={stopped}>
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
          busy={stopped}
          note={note}
          onNote={setNote}
          onCancel={() => setMode("view")}
          onConfirm={(changed) => decide(true, { args: changed })}
        />
      ) : null}
      <dl class="facts">
        <dt>Requester</dt>
        <dd>
          <Text text={approval.agent} /> <span class="muted">in</span> <Text text={approval.environment} />
          {approval.requested_by ? (
            <>
              {" "}
              <span class="muted">for</span> <Text text={approval.requested_by} />
            </>
          ) : null}
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
      {pending && mode === "grant" && approval.grant_limits ? (
        <GrantForm
          approval={approval}
          limits={approval.grant_limits}
          busy={stopped}
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
          busy={stopped}
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
      {!pending ? <Outcome approval={approval} focusRef={outcomeRef} /> : null}
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

function claimDead(a: Approval): string {
  const seen = when(a.claim_seen_at_us ?? 0);
  return (
    `Claimed by a dead process: ${a.claimed_by ?? "its claimant"} was last seen running the call at ${seen}. ` +
    "Whether the tool ran is unknown, so nothing runs it again until you say."
  );
}

function Outcome({ approval, focusRef }: { approval: Approval; focusRef: { current: HTMLElement | null } }) {
  const now = useNow();
  return (
    <section class="outcome" aria-live="polite" tabIndex={-1} ref={focusRef}>
      <h3>Outcome</h3>
      <p>
        <Badge kind={approval.status}>{approval.status}</Badge>{" "}
        {approval.decided_by ? (
          <>
            by <strong>{approval.decided_by}</strong> {approval.decided_at_us ? ago(approval.decided_at_us, now) : ""}
            {" · "}
            {/* signed by the server: verify with `clearance audit verify-receipt` (README: Audit integrity) */}
            <a href={`/v1/approvals/${encodeURIComponent(approval.id)}/receipt`} download>
              Download receipt
            </a>
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
    // any session id, ".." included; only the 15 records before the approval, however long the session
    api<AuditEvent[]>("/v1/replay", { query: { session, until_us: before_us, last: 15 } })
      .then(setEvents)
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
            ) : null}{" "}
            {e.decision ? (
              <Badge kind={e.decision}>
                <Text text={e.decision} />
              </Badge>
            ) : null}
            {e.kind === "llm.call" ? (
              <span class="muted">
                {" "}
                <Text text={String(e.model)} />
              </span>
            ) : null}
          </li>
        ))}
      </ol>
      <a href={href(["sessions", session])}>Replay the whole session →</a>
    </section>
  );
}
