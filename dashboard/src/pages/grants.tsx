// Grants: similar calls let through, and budgets extended, with an approval. Live ones first,
// then those that ended (revoked, expired, used up); filters by agent and session kept in the
// address; approvers and admins revoke a live one, with a reason for the audit log.
import { useEffect, useRef, useState } from "preact/hooks";
import { api, errorText } from "../api";
import { ago, count, duration, usd, when } from "../format";
import { href, navigate, type Route } from "../router";
import type { Grant, Signed } from "../types";
import { Badge, ErrorBox, Fact, Loading, useNow } from "../ui/common";
import { Text, Value } from "../ui/value";

const REFRESH_MS = 15_000; // counters move as calls use a grant; statuses as grants expire

function sorted(grants: Grant[]): Grant[] {
  const live = grants.filter((g) => g.status === "live").sort((a, b) => a.expires_at_us - b.expires_at_us);
  const ended = grants
    .filter((g) => g.status !== "live")
    .sort((a, b) => (b.ended_at_us ?? b.created_at_us) - (a.ended_at_us ?? a.created_at_us));
  return [...live, ...ended];
}

export function Grants({ route, me }: { route: Route; me: Signed }) {
  const agent = route.query.get("agent") ?? "";
  const session = route.query.get("session") ?? "";
  const [grants, setGrants] = useState<Grant[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [loaded, setLoaded] = useState(0); // bumped to read again
  const mayRevoke = me.roles.includes("approver") || me.roles.includes("admin");

  useEffect(() => {
    const abort = new AbortController();
    const read = () =>
      api<Grant[]>("/v1/grants", { query: { agent, session, limit: 500 }, signal: abort.signal })
        .then((found) => {
          setGrants(sorted(found));
          setError(null);
        })
        .catch((e) => abort.signal.aborted || setError(errorText(e)));
    void read();
    const timer = window.setInterval(read, REFRESH_MS);
    return () => {
      abort.abort();
      window.clearInterval(timer);
    };
  }, [agent, session, loaded]);

  const live = grants?.filter((g) => g.status === "live") ?? [];
  const ended = grants?.filter((g) => g.status !== "live") ?? [];
  return (
    <section class="grants">
      <h1>Grants</h1>
      <p class="muted">
        Similar calls an approver let through, and budgets they extended, with an approval. A grant only ever answers
        "require approval": blocking rules still block.
      </p>
      <Filters agent={agent} session={session} />
      <ErrorBox error={error} />
      {grants === null ? (
        <Loading />
      ) : grants.length === 0 ? (
        <p class="muted empty">No grants{agent || session ? " match these filters" : " yet"}.</p>
      ) : (
        <>
          <h2>
            Live <span class="count">{live.length}</span>
          </h2>
          {live.length ? (
            <ul class="grant-list" aria-label="Live grants">
              {live.map((g) => (
                <GrantCard key={g.id} grant={g} mayRevoke={mayRevoke} onChanged={() => setLoaded(loaded + 1)} />
              ))}
            </ul>
          ) : (
            <p class="muted">None is live.</p>
          )}
          {ended.length ? (
            <>
              <h2>
                Ended <span class="count">{ended.length}</span>
              </h2>
              <ul class="grant-list" aria-label="Ended grants">
                {ended.map((g) => (
                  <GrantCard key={g.id} grant={g} mayRevoke={false} onChanged={() => setLoaded(loaded + 1)} />
                ))}
              </ul>
            </>
          ) : null}
        </>
      )}
    </section>
  );
}

function Filters({ agent, session }: { agent: string; session: string }) {
  const [draft, setDraft] = useState({ agent, session });
  useEffect(() => setDraft({ agent, session }), [agent, session]);
  return (
    <form
      class="filters"
      aria-label="Filter grants"
      onSubmit={(e) => {
        e.preventDefault();
        navigate(href(["grants"], { agent: draft.agent.trim(), session: draft.session.trim() }));
      }}
    >
      <label>
        Agent
        <input value={draft.agent} maxLength={200} onInput={(e) => setDraft({ ...draft, agent: e.currentTarget.value })} />
      </label>
      <label>
        Session
        <input
          value={draft.session}
          maxLength={200}
          onInput={(e) => setDraft({ ...draft, session: e.currentTarget.value })}
        />
      </label>
      <div class="actions">
        <button type="submit">Filter</button>
        {agent || session ? <a href={href(["grants"])}>Show all</a> : null}
      </div>
    </form>
  );
}

const SCOPE: Record<Grant["scope"], string> = { session: "session", agent: "agent", requester: "person" };

function Whom({ g }: { g: Grant }) {
  if (g.scope === "session" && g.session)
    return (
      <>
        session{" "}
        <a href={href(["sessions", g.session])}>
          <Text text={g.session} />
        </a>{" "}
        of agent <Text text={g.agent} />
      </>
    );
  if (g.scope === "requester" && g.requester)
    return (
      <>
        calls for <Text text={g.requester} /> by agent <Text text={g.agent} />
      </>
    );
  return (
    <>
      every call of agent <Text text={g.agent} />
    </>
  );
}

function Uses({ g }: { g: Grant }) {
  const counted = g.max_calls !== null || g.max_total !== null;
  return (
    <>
      {g.max_calls !== null ? (
        <span class="use">
          {count(g.calls_used)} of {count(g.max_calls)} calls
        </span>
      ) : null}
      {g.max_total !== null && g.total_arg ? (
        <span class="use">
          <code>
            <Text text={g.total_arg} />
          </code>{" "}
          totals {g.total_used} of {g.max_total}
        </span>
      ) : null}
      {!counted ? <span class="use">no limit on calls or totals</span> : null}{" "}
      <a href={href(["audit"], { q: g.id, kind: "tool_call.decided" })}>calls it let through →</a>
    </>
  );
}

function GrantCard({ grant: g, mayRevoke, onChanged }: { grant: Grant; mayRevoke: boolean; onChanged: () => void }) {
  const now = useNow(5000);
  const [revoking, setRevoking] = useState(false);
  const [reason, setReason] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const reasonRef = useRef<HTMLTextAreaElement>(null);
  useEffect(() => {
    if (revoking) reasonRef.current?.focus();
  }, [revoking]);
  // The page's read is at most REFRESH_MS old: a grant past its end is shown expired at once.
  const status = g.status === "live" && g.expires_at_us / 1000 <= now ? "expired" : g.status;
  const revoke = async () => {
    setBusy(true);
    setError(null);
    try {
      await api<Grant>(`/v1/grants/${encodeURIComponent(g.id)}/revoke`, {
        method: "POST",
        body: reason.trim() ? { reason: reason.trim() } : {},
      });
      setRevoking(false);
      onChanged();
    } catch (e) {
      setError(errorText(e));
      onChanged(); // it may have ended meanwhile: show what it is now
    } finally {
      setBusy(false);
    }
  };
  const constraints = Object.entries(g.constraints);
  return (
    <li class="grant card" aria-label={`Grant ${g.id}`}>
      <header>
        <h3>
          {g.kind === "budget" ? (
            `${g.scope === "session" ? "Session" : "Agent"} budget extended`
          ) : (
            <code>
              <Text text={g.tool ?? ""} />
            </code>
          )}
        </h3>
        <Badge kind={status}>{status}</Badge>
        <Badge kind="scope">{SCOPE[g.scope]}</Badge>
      </header>
      <dl class="facts">
        <dt>For</dt>
        <dd>
          <Whom g={g} /> <span class="muted">({g.environment})</span>
        </dd>
        {g.kind === "budget" ? (
          <>
            <dt>Extended by</dt>
            <dd>
              {[g.extend_usd !== null ? usd(g.extend_usd, true) : null, g.extend_tokens !== null ? `${count(g.extend_tokens)} tokens` : null]
                .filter(Boolean)
                .join(" and ")}
            </dd>
          </>
        ) : (
          <>
            <dt>Uses</dt>
            <dd class="uses">
              <Uses g={g} />
            </dd>
          </>
        )}
        <Fact label="Constraints" when={constraints.length}>
          <ul class="constraints">
            {constraints.map(([name, spec]) => (
              <li key={name}>
                <code>
                  <Text text={name} />
                </code>
                :{" "}
                <code class="value" dir="ltr">
                  <Value value={spec} />
                </code>
              </li>
            ))}
          </ul>
        </Fact>
        <dt>Granted</dt>
        <dd>
          by <Text text={g.granted_by} /> {ago(g.created_at_us, now)}
          <span class="muted"> ({when(g.created_at_us)})</span>
        </dd>
        <dt>{status === "live" ? "Expires" : "Ended"}</dt>
        <dd>
          {status === "live" ? (
            <>
              {when(g.expires_at_us)} <span class="muted">(in {duration(g.expires_at_us / 1e6 - now / 1000)})</span>
            </>
          ) : (
            <>
              {status} {when(g.ended_at_us ?? g.revoked_at_us ?? Math.min(g.expires_at_us, now * 1000))}
            </>
          )}
        </dd>
        <Fact label="Revoked" when={g.revoked_at_us}>
          by <Text text={g.revoked_by ?? "?"} />
          {g.revoke_reason ? (
            <>
              : <q>
                <Text text={g.revoke_reason} />
              </q>
            </>
          ) : null}
        </Fact>
        <Fact label="Rules" when={g.rule_ids.length}>
          {g.rule_ids.map((r) => (
            <code key={r}>
              <Text text={r} />{" "}
            </code>
          ))}
        </Fact>
        <Fact label="Note" when={g.note}>
          <Text text={g.note ?? ""} />
        </Fact>
        <Fact label="From" when={g.approval_id}>
          <a href={href(["approvals", g.approval_id ?? ""])}>approval {g.approval_id}</a>
          {g.policy_revision ? (
            <>
              {" "}
              under policy <code>{g.policy_revision}</code>
            </>
          ) : null}
        </Fact>
      </dl>
      <ErrorBox error={error} />
      {mayRevoke && status === "live" && !revoking ? (
        <div class="actions">
          <button type="button" class="danger" onClick={() => setRevoking(true)}>
            Revoke…
          </button>
        </div>
      ) : null}
      {revoking ? (
        <form
          class="revoke"
          aria-label={`Revoke grant ${g.id}`}
          onSubmit={(e) => {
            e.preventDefault();
            void revoke();
          }}
        >
          <label>
            Why (optional, kept in the audit log)
            <textarea
              ref={reasonRef}
              maxLength={2000}
              value={reason}
              onInput={(e) => setReason(e.currentTarget.value)}
            />
          </label>
          <div class="actions">
            <button type="submit" class="danger" disabled={busy}>
              Revoke
            </button>
            <button type="button" onClick={() => setRevoking(false)}>
              Cancel
            </button>
          </div>
        </form>
      ) : null}
    </li>
  );
}
