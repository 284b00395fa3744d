// Policies: revisions and what is active where; a revision's text and diff; the editor with
// inline validation; "test against history" before activating; activate and roll back.
import { useEffect, useState } from "preact/hooks";
import { api, errorText } from "../api";
import type { Assignment, HistoryReport, PolicyDiff, Problem, Revision, Validation } from "../types";
import { value, when } from "../format";
import { href, navigate, type Route } from "../router";
import { Badge, Confirm, ErrorBox, Head, Loading } from "../ui/common";
import { hasHazards, Text } from "../ui/value";
import { PolicyEditor, where } from "../ui/editor";

export function Policies({ route }: { route: Route }) {
  const [id, action] = [route.path[1], route.path[2]];
  if (id === "new") return <Draft from={route.query.get("from")} />;
  if (id) return action === "edit" ? <Draft from={id} /> : <RevisionView key={id} id={id} />;
  return <List />;
}

function useAssignments(): [Assignment[] | null, () => void] {
  const [assignments, setAssignments] = useState<Assignment[] | null>(null);
  const load = () => void api<Assignment[]>("/v1/policies/assignments").then(setAssignments);
  useEffect(load, []);
  return [assignments, load];
}

function List() {
  const [revisions, setRevisions] = useState<Revision[] | null>(null);
  const [assignments, reload] = useAssignments();
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [asking, setAsking] = useState<Assignment | null>(null); // the rollback waiting for a yes
  const [rolled, setRolled] = useState<string | null>(null);
  useEffect(() => {
    api<Revision[]>("/v1/policies")
      .then(setRevisions)
      .catch((e) => setError(errorText(e)));
  }, []);
  const rollback = async (a: Assignment) => {
    setBusy(true);
    setError(null);
    setRolled(null);
    try {
      // What the admin confirmed: the server refuses if another admin changed the scope since.
      const body = { ...target(a.scope), current: a.revision_id, to: a.previous_revision_id };
      await api("/v1/policies/rollback", { method: "POST", body });
      setRolled(`${a.scope} rolled back to ${a.previous_revision_id}.`);
    } catch (e) {
      setError(errorText(e));
    } finally {
      setBusy(false);
      setAsking(null);
      reload();
    }
  };
  const active = new Map<string, string[]>();
  for (const a of assignments ?? []) active.set(a.revision_id, [...(active.get(a.revision_id) ?? []), a.scope]);
  const current = assignments?.find((a) => a.scope === "default")?.revision_id;
  return (
    <section>
      <div class="toolbar">
        <h1>Policies</h1>
        <span class="actions">
          <a class="button" href={href(["shadow"])}>
            Shadow report
          </a>
          <a class="button primary" href={href(["policies", "new"], { from: current })}>
            New draft
          </a>
        </span>
      </div>
      <ErrorBox error={error} />
      <h2>Active</h2>
      {assignments === null ? (
        <Loading />
      ) : assignments.length === 0 ? (
        <p class="muted">No revision is active on this server yet.</p>
      ) : (
        <table class="events stack">
          <Head cols={["scope", "revision", "since", "by", ""]} />
          <tbody>
            {assignments.map((a) => (
              <tr key={a.scope}>
                <td data-label="scope">
                  <Text text={a.scope} />
                </td>
                <td data-label="revision">
                  <a href={href(["policies", a.revision_id])}>{a.revision_id}</a>
                </td>
                <td data-label="since" class="nowrap">
                  {when(a.activated_at_us)}
                </td>
                <td data-label="by">{a.activated_by ? <Text text={a.activated_by} /> : "—"}</td>
                <td class="row-actions">
                  <RollBack assignment={a} busy={busy} onAsk={() => setAsking(a)} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {rolled ? (
        <p class="ok" role="status">
          {rolled}
        </p>
      ) : null}
      {asking ? (
        <Confirm
          title={`Roll back ${asking.scope}?`}
          confirm={`Roll back to ${asking.previous_revision_id}`}
          busy={busy}
          onConfirm={() => void rollback(asking)}
          onCancel={() => setAsking(null)}
        >
          <p>
            <code>{asking.previous_revision_id}</code>, the revision active before, decides every call for{" "}
            {asking.scope} again, in place of <code>{asking.revision_id}</code>. Agents pick it up within seconds.
          </p>
        </Confirm>
      ) : null}
      <h2>Revisions</h2>
      {revisions === null ? (
        <Loading />
      ) : (
        <table class="events stack">
          <Head cols={["revision", "status", "created", "author", "active for"]} />
          <tbody>
            {revisions.map((r) => (
              <tr key={r.id}>
                <td data-label="revision">
                  <a href={href(["policies", r.id])}>{r.id}</a>{" "}
                  <span class="muted">
                    <Text text={r.source} />
                  </span>
                </td>
                <td data-label="status">
                  <Badge kind={r.status === "valid" ? "ok" : "error"}>{r.status}</Badge>
                </td>
                <td data-label="created" class="nowrap">
                  {when(r.created_at_us)}
                </td>
                <td data-label="author">{r.author ? <Text text={r.author} /> : "—"}</td>
                <td data-label="active for">{(active.get(r.id) ?? []).join(", ")}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

// Roll back is offered only when the scope had a revision before this one, and says so when not.
function RollBack({ assignment: a, busy, onAsk }: { assignment: Assignment; busy: boolean; onAsk: () => void }) {
  const why = `rollback-why-${a.scope.replace(/[^A-Za-z0-9_-]/g, "_")}`;
  if (a.previous_revision_id)
    return (
      <button type="button" disabled={busy} onClick={onAsk} title={`Activate ${a.previous_revision_id} again`}>
        Roll back
      </button>
    );
  return (
    <span class="rollback-none">
      <button type="button" disabled aria-describedby={why} title="No earlier revision was active here">
        Roll back
      </button>{" "}
      <span id={why} class="muted small">
        no earlier revision was active for {a.scope}
      </span>
    </span>
  );
}

export function target(scope: string): { agent?: string; environment?: string } {
  const [kind, name] = [scope.split(":", 1)[0], scope.slice(scope.indexOf(":") + 1)];
  if (kind === "agent") return { agent: name };
  if (kind === "environment") return { environment: name };
  return {};
}

// Activate a revision for a scope, or (shadow) decide it beside the enforced one without enforcing it.
function Activate({
  revision,
  onDone,
  shadow = false,
}: {
  revision: string;
  onDone: (scope: string) => void;
  shadow?: boolean;
}) {
  const [kind, setKind] = useState<"default" | "agent" | "environment">("default");
  const [name, setName] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (event: Event) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    const scope = kind === "default" ? "default" : `${kind}:${name.trim()}`;
    try {
      const action = shadow ? "shadow" : "activate";
      await api(`/v1/policies/${encodeURIComponent(revision)}/${action}`, { method: "POST", body: target(scope) });
      onDone(scope);
    } catch (e) {
      setError(errorText(e));
    } finally {
      setBusy(false);
    }
  };
  return (
    <form class="activate inline-form" onSubmit={submit} aria-label={shadow ? "Decide in shadow" : "Activate"}>
      <label class="inline">
        {shadow ? "Decide in shadow for" : "Activate for"}
        <select value={kind} onChange={(e) => setKind(e.currentTarget.value as typeof kind)}>
          <option value="default">everyone (default)</option>
          <option value="environment">an environment</option>
          <option value="agent">an agent</option>
        </select>
      </label>
      {kind !== "default" ? (
        <input aria-label={`${kind} name`} required value={name} onInput={(e) => setName(e.currentTarget.value)} />
      ) : null}
      <button type="submit" class={shadow ? "" : "primary"} disabled={busy}>
        {shadow ? "Decide in shadow" : "Activate"}
      </button>
      <ErrorBox error={error} />
    </form>
  );
}

function RevisionView({ id }: { id: string }) {
  const [rev, setRev] = useState<Revision | null>(null);
  const [diff, setDiff] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [done, setDone] = useState<string | null>(null);
  const [shadowed, setShadowed] = useState<string | null>(null);
  useEffect(() => {
    api<Revision>(`/v1/policies/${encodeURIComponent(id)}`)
      .then((r) => {
        setRev(r);
        if (r.parent)
          api<PolicyDiff>(`/v1/policies/${encodeURIComponent(id)}/diff`)
            .then((d) => setDiff(d.diff))
            .catch(() => setDiff(null));
      })
      .catch((e) => setError(errorText(e)));
  }, [id]);
  if (error) return <ErrorBox error={error} />;
  if (!rev) return <Loading />;
  return (
    <article>
      <a class="back" href="#/policies">
        ← Policies
      </a>
      <h1>
        Revision <code>{rev.id}</code> <Badge kind={rev.status === "valid" ? "ok" : "error"}>{rev.status}</Badge>
      </h1>
      <p class="muted">
        {rev.source} · {when(rev.created_at_us)} · by {rev.author ?? "—"}
        {rev.parent ? (
          <>
            {" "}
            · after <a href={href(["policies", rev.parent])}>{rev.parent}</a>
          </>
        ) : null}
      </p>
      {rev.problems.length ? <Problems problems={rev.problems} /> : null}
      <div class="actions">
        <a class="button" href={href(["policies", rev.id, "edit"])}>
          Edit as a new draft
        </a>
      </div>
      {rev.status === "valid" ? <Activate revision={rev.id} onDone={(scope) => setDone(scope)} /> : null}
      {done ? (
        <p class="ok" role="status">
          Active for {done} now.
        </p>
      ) : null}
      {rev.status === "valid" ? <Activate revision={rev.id} shadow onDone={(scope) => setShadowed(scope)} /> : null}
      {shadowed ? (
        <p class="ok" role="status">
          Deciding in shadow for {shadowed} now: see the <a href={href(["shadow"])}>shadow report</a>.
        </p>
      ) : null}
      {diff ? (
        <>
          <h2>Changes from {rev.parent}</h2>
          <Diff text={diff} />
        </>
      ) : null}
      <h2>Text</h2>
      <pre class="policy-text">{rev.text}</pre>
    </article>
  );
}

function Diff({ text }: { text: string }) {
  return (
    <pre class="diff-text">
      {text.split("\n").map((line, i) => (
        <div key={i} class={line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : line.startsWith("@@") ? "hunk" : ""}>
          {line || " "}
        </div>
      ))}
    </pre>
  );
}

function Draft({ from }: { from: string | null }) {
  const [text, setText] = useState<string | null>(from ? null : "version: 1\ndefault: allow\ntools: {}\n");
  const [validation, setValidation] = useState<Validation | null>(null);
  const [report, setReport] = useState<HistoryReport | null>(null);
  const [last, setLast] = useState(1000);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [saved, setSaved] = useState<Revision | null>(null);
  useEffect(() => {
    if (from)
      api<Revision>(`/v1/policies/${encodeURIComponent(from)}`)
        .then((r) => setText(r.text ?? ""))
        .catch((e) => setError(errorText(e)));
  }, [from]);
  if (text === null) return error ? <ErrorBox error={error} /> : <Loading />;

  const run = async (what: () => Promise<void>) => {
    setBusy(true);
    setError(null);
    try {
      await what();
    } catch (e) {
      setError(errorText(e));
    } finally {
      setBusy(false);
    }
  };
  const test = () =>
    run(async () => setReport(await api<HistoryReport>("/v1/policies/test", { method: "POST", body: { text, last } })));
  const save = () =>
    run(async () => setSaved(await api<Revision>("/v1/policies", { method: "POST", body: { text } })));

  return (
    <section class="draft">
      <a class="back" href="#/policies">
        ← Policies
      </a>
      <h1>{from ? `New draft from ${from}` : "New draft"}</h1>
      <PolicyEditor
        text={text}
        onChange={(t) => {
          setText(t);
          setSaved(null);
          setReport(null);
        }}
        onValidated={setValidation}
      />
      <div class="validation" role="status">
        {validation === null ? (
          "Checking…"
        ) : validation.valid ? (
          <Badge kind="ok">valid</Badge>
        ) : (
          <>
            <Badge kind="error">
              {validation.problems.length} {validation.problems.length === 1 ? "problem" : "problems"}
            </Badge>
            <Problems problems={validation.problems} />
          </>
        )}
      </div>
      <ErrorBox error={error} />
      <div class="actions">
        <label class="inline">
          Test against the last
          <input
            type="number"
            min={1}
            max={100000}
            value={last}
            aria-label="how many recorded calls"
            onInput={(e) => setLast(Number(e.currentTarget.value) || 1000)}
          />
          calls
        </label>
        <button type="button" disabled={busy || !validation?.valid} onClick={test}>
          Test against history
        </button>
        <button type="button" class="primary" disabled={busy || !validation?.valid} onClick={save}>
          Save revision
        </button>
      </div>
      {saved ? (
        <div class="saved">
          <p class="ok" role="status">
            Saved as <a href={href(["policies", saved.id])}>{saved.id}</a>.
          </p>
          <Activate revision={saved.id} onDone={() => navigate(href(["policies"]))} />
        </div>
      ) : null}
      {report ? <Report report={report} /> : null}
    </section>
  );
}

function Problems({ problems }: { problems: Problem[] }) {
  return (
    <ul class="problems">
      {problems.map((p, i) => (
        <li key={i}>
          {where(p) ? <span class="problem-where">{where(p)}: </span> : null}
          {p.rule_id ? (
            <>
              rule <code>{p.rule_id}</code>:{" "}
            </>
          ) : null}
          <Text text={p.message} />
        </li>
      ))}
    </ul>
  );
}

function Report({ report }: { report: HistoryReport }) {
  return (
    <section class="report" aria-label="Test against history">
      <h2>Test against history</h2>
      <p>
        Of the last <strong>{report.checked}</strong> recorded calls, <strong>{report.changed}</strong> would be
        decided differently
        {Object.entries(report.transitions).length
          ? ": " +
            Object.entries(report.transitions)
              .map(([step, n]) => `${n} ${step}`)
              .join(", ")
          : ""}
        .{report.uncertain ? ` ${report.uncertain} cannot be reproduced exactly (see the notes).` : ""}
      </p>
      {report.rows.length ? (
        <div class="scroll">
          <table class="events">
            <Head cols={["#", "time", "agent", "tool", "arguments", "was", "would be", "why"]} />
            <tbody>
              {report.rows.map((r) => (
                <tr key={r.seq}>
                  <td>
                    <a href={href(["audit", r.seq])}>{r.seq}</a>
                  </td>
                  <td class="nowrap">{when(r.at_us)}</td>
                  <td>{r.agent}</td>
                  <td>
                    <code>
                      <Text text={r.tool} />
                    </code>
                  </td>
                  <td class="clip">
                    {hasHazards(r.args) ? <Badge kind="hazard">hidden characters</Badge> : null}{" "}
                    <Text
                      text={Object.entries(r.args)
                        .slice(0, 12)
                        .map(([k, v]) => `${k}=${value(v).slice(0, 200)}`)
                        .join(", ")}
                    />
                  </td>
                  <td>
                    <Badge kind={r.recorded}>{r.recorded}</Badge>
                  </td>
                  <td>
                    <Badge kind={r.draft}>{r.draft}</Badge>
                  </td>
                  <td>
                    {r.draft_reason}
                    {r.uncertain ? <p class="muted">note: {r.uncertain}</p> : null}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
    </section>
  );
}
