// The shadow report: which revisions decide in shadow beside the enforced ones, and over a
// window where they decided otherwise (by enforced → shadow and rule, with example calls),
// and what monitor rules would have done. Admins promote a shadow (after confirming) or clear it.
import { useEffect, useState } from "preact/hooks";
import { api, errorText } from "../api";
import { count, value, when } from "../format";
import { href, navigate, type Route } from "../router";
import type { ShadowActive, ShadowExample, ShadowReport } from "../types";
import { Badge, Confirm, ErrorBox, Head, Loading } from "../ui/common";
import { hasHazards, Text } from "../ui/value";
import { visible } from "../visible";
import { target } from "./policies";

const WINDOWS: [string, string][] = [
  ["1h", "last hour"],
  ["24h", "last 24 hours"],
  ["7d", "last 7 days"],
  ["30d", "last 30 days"],
];

export function Shadow({ route, isAdmin }: { route: Route; isAdmin: boolean }) {
  const since = route.query.get("since") || "24h";
  const [report, setReport] = useState<ShadowReport | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [loaded, setLoaded] = useState(0);
  const [done, setDone] = useState<string | null>(null); // what the last promote or clear did
  useEffect(() => {
    const abort = new AbortController();
    setReport(null);
    api<ShadowReport>("/v1/policies/shadow", { query: { since, examples: 3 }, signal: abort.signal })
      .then((r) => {
        setReport(r);
        setError(null);
      })
      .catch((e) => abort.signal.aborted || setError(errorText(e)));
    return () => abort.abort();
  }, [since, loaded]);
  const known = WINDOWS.some(([w]) => w === since);
  return (
    <section class="shadow">
      <div class="toolbar">
        <h1>Shadow policy</h1>
        <label class="inline">
          Window
          <select value={since} onChange={(e) => navigate(href(["shadow"], { since: e.currentTarget.value }))}>
            {known ? null : <option value={since}>{since}</option>}
            {WINDOWS.map(([w, label]) => (
              <option key={w} value={w}>
                {label}
              </option>
            ))}
          </select>
        </label>
      </div>
      <p class="muted">
        A revision in shadow decides every call of its scope beside the enforced one. What it decides is recorded with the
        call and never enforced; promote it once its differences are the ones you meant.
      </p>
      <ErrorBox error={error} />
      {done ? (
        <p class="ok" role="status">
          {done}
        </p>
      ) : null}
      {report === null ? (
        error ? null : <Loading />
      ) : (
        <>
          <Active
            active={report.active}
            isAdmin={isAdmin}
            onChanged={(said) => {
              setDone(said);
              setLoaded(loaded + 1);
            }}
          />
          <Summary report={report} />
          <Differences report={report} />
          <Monitored report={report} />
        </>
      )}
    </section>
  );
}

type Changed = (said: string) => void;

function Active({ active, isAdmin, onChanged }: { active: ShadowActive[]; isAdmin: boolean; onChanged: Changed }) {
  return (
    <>
      <h2>Active shadows</h2>
      {active.length === 0 ? (
        <p class="muted">
          No revision decides in shadow now.
          {isAdmin ? (
            <>
              {" "}
              Open a revision on <a href={href(["policies"])}>Policies</a> to decide it in shadow.
            </>
          ) : null}
        </p>
      ) : (
        <ul class="shadow-active">
          {active.map((a) => (
            <ActiveShadow key={a.scope} shadow={a} isAdmin={isAdmin} onChanged={onChanged} />
          ))}
        </ul>
      )}
    </>
  );
}

function ActiveShadow({ shadow: a, isAdmin, onChanged }: { shadow: ShadowActive; isAdmin: boolean; onChanged: Changed }) {
  const [confirming, setConfirming] = useState<"promote" | "clear" | null>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const run = async (what: () => Promise<unknown>, said: string) => {
    setBusy(true);
    setError(null);
    try {
      await what();
      onChanged(said);
    } catch (e) {
      setError(errorText(e));
    } finally {
      setBusy(false);
      setConfirming(null); // the error, if any, shows in the card the dialog covered
    }
  };
  const promote = () =>
    run(
      () => api("/v1/policies/shadow/promote", { method: "POST", body: target(a.scope) }),
      `${a.revision_id} is enforced for ${a.scope} now.`,
    );
  const clear = () =>
    run(
      () => api("/v1/policies/shadow", { method: "DELETE", query: target(a.scope) }),
      `The shadow of ${a.scope} is cleared.`,
    );
  return (
    <li class="card" aria-label={`Shadow for ${a.scope}`}>
      <p>
        <strong>
          <Text text={a.scope} />
        </strong>
        : revision{" "}
        {isAdmin ? (
          <a href={href(["policies", a.revision_id])}>
            <code>{a.revision_id}</code>
          </a>
        ) : (
          <code>{a.revision_id}</code>
        )}{" "}
        in shadow since {when(a.activated_at_us)}
        {a.activated_by ? (
          <>
            {" "}
            by <Text text={a.activated_by} />
          </>
        ) : null}
      </p>
      <ErrorBox error={error} />
      {isAdmin ? (
        <div class="actions">
          <button type="button" class="primary" disabled={busy} onClick={() => setConfirming("promote")}>
            Promote…
          </button>
          <button type="button" disabled={busy} onClick={() => setConfirming("clear")}>
            Clear shadow…
          </button>
        </div>
      ) : null}
      {confirming === "clear" ? (
        <Confirm
          title={`Clear the shadow of ${visible(a.scope)}?`}
          confirm="Clear shadow"
          danger
          busy={busy}
          onConfirm={() => void clear()}
          onCancel={() => setConfirming(null)}
        >
          <p>
            Stop deciding <code>{a.revision_id}</code> in shadow for <Text text={a.scope} />? Later calls are no longer
            compared with it; what it decided so far stays in the audit log and in this report.
          </p>
        </Confirm>
      ) : null}
      {confirming === "promote" ? (
        <Confirm
          title={`Promote the shadow of ${visible(a.scope)}?`}
          confirm="Promote"
          busy={busy}
          onConfirm={() => void promote()}
          onCancel={() => setConfirming(null)}
        >
          <p>
            Enforce <code>{a.revision_id}</code> for <Text text={a.scope} />? From the next call on it decides, instead of
            the revision enforced now, and the shadow slot empties. Rolling back is one click on Policies.
          </p>
        </Confirm>
      ) : null}
    </li>
  );
}

function Summary({ report }: { report: ShadowReport }) {
  const revisions = Object.entries(report.revisions);
  return (
    <>
      <h2>
        {when(report.since_us)} – {when(report.until_us)}
      </h2>
      <dl class="totals">
        <div>
          <dt>calls decided in shadow too</dt>
          <dd>{count(report.calls)}</dd>
        </div>
        <div>
          <dt>decided otherwise</dt>
          <dd>{count(report.differing)}</dd>
        </div>
        <div>
          <dt>monitor rule hits</dt>
          <dd>{count(report.monitored.reduce((n, m) => n + m.count, 0))}</dd>
        </div>
      </dl>
      {revisions.length ? (
        <p class="muted">
          Shadow revisions in this window:{" "}
          {revisions.map(([rev, n]) => `${rev} (${count(n)} calls)`).join(", ")}.
        </p>
      ) : null}
      {report.unreadable ? (
        <p class="muted">{count(report.unreadable)} record(s) could not be read by this version and are not counted.</p>
      ) : null}
    </>
  );
}

function Differences({ report }: { report: ShadowReport }) {
  return (
    <section aria-label="Differences">
      <h2>Where the shadow decided otherwise</h2>
      {report.differences.length === 0 ? (
        <p class="muted">
          {report.calls ? "The shadow decided every call as the enforced policy did." : "No call was decided in shadow."}
        </p>
      ) : (
        report.differences.map((d, i) => (
          <article class="card difference" key={i} aria-label={`${d.enforced} to ${d.shadow} by ${d.rule_id ?? "default"}`}>
            <h3>
              <Badge kind={d.enforced}>{d.enforced}</Badge> → <Badge kind={d.shadow}>{d.shadow}</Badge>{" "}
              {d.rule_id ? (
                <>
                  by rule{" "}
                  <code>
                    <Text text={d.rule_id} />
                  </code>
                </>
              ) : (
                "by the shadow's default"
              )}{" "}
              <span class="count">
                {count(d.count)} call{d.count === 1 ? "" : "s"}
              </span>
            </h3>
            <Examples examples={d.examples} />
          </article>
        ))
      )}
    </section>
  );
}

function Monitored({ report }: { report: ShadowReport }) {
  if (!report.monitored.length) return null;
  return (
    <section aria-label="Monitor rules">
      <h2>Monitor rules</h2>
      <p class="muted">Rules in mode: monitor are decided and recorded, and the call is allowed.</p>
      {report.monitored.map((m, i) => (
        <article class="card difference" key={i}>
          <h3>
            <code>
              <Text text={m.rule_id} />
            </code>{" "}
            ({m.policy}) would <Badge kind={m.would}>{m.would}</Badge>{" "}
            <span class="count">
              {count(m.count)} call{m.count === 1 ? "" : "s"}
            </span>
          </h3>
          <Examples examples={m.examples} />
        </article>
      ))}
    </section>
  );
}

function args(example: ShadowExample): string {
  const a = example.args;
  if (a === null || typeof a !== "object" || Array.isArray(a)) return value(a).slice(0, 400);
  return Object.entries(a as Record<string, unknown>)
    .slice(0, 12)
    .map(([k, v]) => `${k}=${value(v).slice(0, 200)}`)
    .join(", ");
}

function Examples({ examples }: { examples: ShadowExample[] }) {
  if (!examples.length) return null;
  return (
    <div class="scroll">
      <table class="events examples">
        <Head cols={["time", "agent", "tool", "arguments", "enforced said", "shadow said", ""]} />
        <tbody>
          {examples.map((e, i) => (
            <tr key={e.call_id ?? i}>
              <td class="nowrap">{when(e.at_us)}</td>
              <td>
                <Text text={e.agent ?? ""} />
              </td>
              <td>
                <code>
                  <Text text={e.tool ?? ""} />
                </code>
              </td>
              <td class="clip">
                {hasHazards(e.args) ? <Badge kind="hazard">hidden characters</Badge> : null} <Text text={args(e)} />
              </td>
              <td>
                <Text text={e.enforced_reason ?? e.enforced_rule_ids.join(", ")} />
              </td>
              <td>
                <Text text={e.shadow_reason ?? e.shadow_rule_ids.join(", ")} />
              </td>
              <td class="nowrap">
                {e.call_id ? <a href={href(["audit"], { call_id: e.call_id })}>record</a> : null}
                {e.call_id && e.session ? " · " : null}
                {e.session ? <a href={href(["sessions", e.session])}>session</a> : null}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
