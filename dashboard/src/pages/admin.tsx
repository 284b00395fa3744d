// Admin: API keys (the secret shown once), people and their roles, approval channel and webhook settings
// with a test message for each.
import { useEffect, useState } from "preact/hooks";
import { api, errorText } from "../api";
import { when } from "../format";
import type { Integrations, Key, KeyCreated, Signed, TestResult, User } from "../types";
import { Badge, ErrorBox, Head, Loading } from "../ui/common";
import { Text } from "../ui/value";

const SCOPES = ["agent", "approver", "admin"];

export function Admin({ me }: { me: Signed }) {
  return (
    <section class="admin">
      <h1>Admin</h1>
      <Keys />
      <Users me={me} />
      <IntegrationsPanel />
    </section>
  );
}

function Keys() {
  const [keys, setKeys] = useState<Key[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [secret, setSecret] = useState<{ name: string; secret: string } | null>(null);
  const [form, setForm] = useState({ name: "", scopes: ["agent"], agent: "", environment: "production" });
  const load = () =>
    void api<Key[]>("/v1/keys")
      .then(setKeys)
      .catch((e) => setError(errorText(e)));
  useEffect(load, []);

  const create = async (event: Event) => {
    event.preventDefault();
    setError(null);
    try {
      const made = await api<KeyCreated>("/v1/keys", {
        method: "POST",
        body: { name: form.name, scopes: form.scopes, agent: form.agent || null, environment: form.environment },
      });
      setSecret({ name: made.key.name, secret: made.secret });
      setForm({ ...form, name: "", agent: "" });
      load();
    } catch (e) {
      setError(errorText(e));
    }
  };
  const revoke = async (key: Key) => {
    if (!window.confirm(`Revoke the key "${key.name}"? Whatever uses it stops working at once.`)) return;
    try {
      await api(`/v1/keys/${encodeURIComponent(key.id)}`, { method: "DELETE" });
      load();
    } catch (e) {
      setError(errorText(e));
    }
  };
  const toggle = (scope: string) =>
    setForm({
      ...form,
      scopes: form.scopes.includes(scope) ? form.scopes.filter((s) => s !== scope) : [...form.scopes, scope],
    });

  return (
    <section aria-labelledby="keys-title">
      <h2 id="keys-title">API keys</h2>
      <ErrorBox error={error} />
      {secret ? (
        <div class="secret" role="alert">
          <p>
            The key <strong>{secret.name}</strong> — copy it now, it is not shown again:
          </p>
          <input readOnly value={secret.secret} aria-label="new key" onFocus={(e) => e.currentTarget.select()} />
          <button type="button" onClick={() => setSecret(null)}>
            I have copied it
          </button>
        </div>
      ) : null}
      <form class="inline-form" onSubmit={create} aria-label="Create a key">
        <label>
          Name
          <input required value={form.name} onInput={(e) => setForm({ ...form, name: e.currentTarget.value })} />
        </label>
        <fieldset>
          <legend>Scopes</legend>
          {SCOPES.map((s) => (
            <label key={s} class="inline">
              <input type="checkbox" checked={form.scopes.includes(s)} onChange={() => toggle(s)} /> {s}
            </label>
          ))}
        </fieldset>
        <label>
          Agent
          <input
            value={form.agent}
            placeholder="for agent keys"
            onInput={(e) => setForm({ ...form, agent: e.currentTarget.value })}
          />
        </label>
        <label>
          Environment
          <input
            required
            pattern="[a-z0-9\-]{1,40}"
            value={form.environment}
            onInput={(e) => setForm({ ...form, environment: e.currentTarget.value })}
          />
        </label>
        <button type="submit" class="primary" disabled={!form.scopes.length}>
          Create key
        </button>
      </form>
      {keys === null ? (
        <Loading />
      ) : (
        <div class="scroll">
          <table class="events">
            <Head cols={["name", "scopes", "agent", "environment", "created", "last used", ""]} />
            <tbody>
              {keys.map((k) => (
                <tr key={k.id} class={k.revoked_at_us ? "revoked" : ""}>
                  <td>
                    {k.name} <span class="muted">{k.id}</span>
                  </td>
                  <td>{k.scopes.join(", ")}</td>
                  <td>{k.agent ?? "—"}</td>
                  <td>{k.environment}</td>
                  <td class="nowrap">
                    {when(k.created_at_us)} <span class="muted">{k.created_by ?? ""}</span>
                  </td>
                  <td class="nowrap">{k.last_used_at_us ? when(k.last_used_at_us) : "never"}</td>
                  <td>
                    {k.revoked_at_us ? (
                      <Badge kind="revoked">revoked</Badge>
                    ) : (
                      <button type="button" class="danger" onClick={() => revoke(k)}>
                        Revoke
                      </button>
                    )}
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

function Users({ me }: { me: Signed }) {
  const [users, setUsers] = useState<User[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [form, setForm] = useState({ username: "", password: "", roles: "approver" });
  const load = () =>
    void api<User[]>("/v1/users")
      .then(setUsers)
      .catch((e) => setError(errorText(e)));
  useEffect(load, []);

  const create = async (event: Event) => {
    event.preventDefault();
    setError(null);
    try {
      await api("/v1/users", {
        method: "POST",
        body: { username: form.username, password: form.password, roles: roles(form.roles) },
      });
      setForm({ username: "", password: "", roles: "approver" });
      load();
    } catch (e) {
      setError(errorText(e));
    }
  };
  const change = async (user: User, body: Record<string, unknown>) => {
    setError(null);
    try {
      await api(`/v1/users/${encodeURIComponent(user.username)}`, { method: "PATCH", body });
      load();
    } catch (e) {
      setError(errorText(e));
    }
  };

  return (
    <section aria-labelledby="users-title">
      <h2 id="users-title">People</h2>
      <ErrorBox error={error} />
      <form class="inline-form" onSubmit={create} aria-label="Add a person">
        <label>
          Username
          <input required value={form.username} onInput={(e) => setForm({ ...form, username: e.currentTarget.value })} />
        </label>
        <label>
          Password (12+ characters)
          <input
            type="password"
            autoComplete="new-password"
            required
            minLength={12}
            value={form.password}
            onInput={(e) => setForm({ ...form, password: e.currentTarget.value })}
          />
        </label>
        <label>
          Roles
          <input
            required
            value={form.roles}
            title="approver, admin, or approver groups such as support-lead, comma-separated"
            onInput={(e) => setForm({ ...form, roles: e.currentTarget.value })}
          />
        </label>
        <button type="submit" class="primary">
          Add person
        </button>
      </form>
      {users === null ? (
        <Loading />
      ) : (
        <table class="events">
          <Head cols={["username", "roles", "since", "access"]} />
          <tbody>
            {users.map((u) => (
              <tr key={u.username}>
                <td>{u.username}</td>
                <td>
                  <RolesCell user={u} onSave={(next) => change(u, { roles: next })} />
                </td>
                <td class="nowrap">{when(u.created_at_us)}</td>
                <td>
                  {u.username === me.username ? (
                    <span class="muted">you</span>
                  ) : u.disabled_at_us ? (
                    <button type="button" onClick={() => change(u, { disabled: false })}>
                      Enable
                    </button>
                  ) : (
                    <button type="button" class="danger" onClick={() => change(u, { disabled: true })}>
                      Disable
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

function RolesCell({ user, onSave }: { user: User; onSave: (roles: string[]) => void }) {
  const [text, setText] = useState(user.roles.join(", "));
  return (
    <form
      class="inline-form"
      onSubmit={(e) => {
        e.preventDefault();
        onSave(roles(text));
      }}
    >
      <input aria-label={`roles of ${user.username}`} value={text} onInput={(e) => setText(e.currentTarget.value)} />
      {text !== user.roles.join(", ") ? <button type="submit">Save</button> : null}
    </form>
  );
}

function roles(text: string): string[] {
  return text
    .split(",")
    .map((r) => r.trim())
    .filter(Boolean);
}

function IntegrationsPanel() {
  const [state, setState] = useState<Integrations | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [url, setUrl] = useState("");
  const [result, setResult] = useState<{ what: string; outcome: TestResult } | null>(null);
  useEffect(() => {
    api<Integrations>("/v1/admin/integrations")
      .then((s) => {
        setState(s);
        setUrl(s.webhooks.allowed[0] ?? "");
      })
      .catch((e) => setError(errorText(e)));
  }, []);
  const test = async (what: string, path: string, body?: unknown) => {
    setError(null);
    setResult(null);
    try {
      setResult({ what, outcome: await api<TestResult>(path, { method: "POST", body }) });
    } catch (e) {
      setError(errorText(e));
    }
  };
  if (!state) return error ? <ErrorBox error={error} /> : <Loading />;
  const yes = (v: boolean) => (v ? <Badge kind="ok">set</Badge> : <Badge kind="error">not set</Badge>);
  return (
    <section aria-labelledby="integrations-title">
      <h2 id="integrations-title">Approval channels and webhooks</h2>
      <p class="muted">Set by the server's CLEARANCE_SLACK_*, CLEARANCE_SMTP_* and CLEARANCE_WEBHOOK_* variables; secrets are never shown.</p>
      <div class="cards">
        {state.channels.map((c) => (
          <div class="card" key={c.name}>
            <h3>
              {c.name} {c.configured ? <Badge kind="ok">configured</Badge> : <Badge kind="error">not configured</Badge>}
            </h3>
            <dl class="facts">
              {Object.entries(c.settings).map(([k, v]) => [
                <dt key={`${k}-t`}>{k.replace(/_set$/, "").replace(/_/g, " ")}</dt>,
                <dd key={`${k}-d`}>{typeof v === "boolean" ? yes(v) : <Text text={v ?? "—"} />}</dd>,
              ])}
              <dt>Delivered</dt>
              <dd>
                {c.messages} approvals, {c.sent} messages
              </dd>
              <dt>Failures</dt>
              <dd>
                {c.failures}
                {c.last_error ? <> — <Text text={c.last_error} /></> : null}
              </dd>
            </dl>
            <button
              type="button"
              disabled={!c.configured}
              onClick={() => test(c.name, `/v1/admin/channels/${encodeURIComponent(c.name)}/test`)}
            >
              Send test message
            </button>
          </div>
        ))}
        <div class="card">
          <h3>Webhooks</h3>
          <dl class="facts">
            <dt>Signing secret</dt>
            <dd>{yes(state.webhooks.secret_set)}</dd>
            <dt>Allowed URLs</dt>
            <dd>{state.webhooks.allowed.length ? state.webhooks.allowed.join(", ") : "none"}</dd>
          </dl>
          <form
            class="inline-form"
            onSubmit={(e) => {
              e.preventDefault();
              void test("Webhook", "/v1/admin/webhooks/test", { url });
            }}
          >
            <input aria-label="webhook URL" type="url" required value={url} onInput={(e) => setUrl(e.currentTarget.value)} />
            <button type="submit" disabled={!state.webhooks.secret_set}>
              Send test webhook
            </button>
          </form>
        </div>
      </div>
      <ErrorBox error={error} />
      {result ? (
        <p class={result.outcome.ok ? "ok" : "error"} role="status">
          {result.what} test: {result.outcome.ok ? "sent" : "failed"} — {result.outcome.detail} ({result.outcome.duration_ms}{" "}
          ms)
        </p>
      ) : null}
    </section>
  );
}
