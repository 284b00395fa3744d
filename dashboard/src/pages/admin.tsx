// Admin: API keys (the secret shown once), people and their roles, approval channel and webhook settings
// with a test message for each.
import { useEffect, useState } from "preact/hooks";
import { api, errorText } from "../api";
import { when } from "../format";
import type { Integrations, Key, KeyCreated, Role, Signed, TestResult, User } from "../types";
import { Badge, Confirm, ErrorBox, Head, Loading } from "../ui/common";
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
  const [revoking, setRevoking] = useState<Key | null>(null);
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
    setError(null);
    try {
      await api(`/v1/keys/${encodeURIComponent(key.id)}`, { method: "DELETE" });
    } catch (e) {
      setError(errorText(e));
    } finally {
      setRevoking(null);
      load();
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
        <table class="events stack">
          <Head cols={["name", "scopes", "agent", "environment", "created", "last used", ""]} />
          <tbody>
            {keys.map((k) => (
              <tr key={k.id} class={k.revoked_at_us ? "revoked" : ""}>
                <td data-label="name">
                  <Text text={k.name} /> <span class="muted">{k.id}</span>
                </td>
                <td data-label="scopes">{k.scopes.join(", ")}</td>
                <td data-label="agent">{k.agent ? <Text text={k.agent} /> : "—"}</td>
                <td data-label="environment">{k.environment}</td>
                <td data-label="created" class="nowrap">
                  {when(k.created_at_us)} <span class="muted">{k.created_by ?? ""}</span>
                </td>
                <td data-label="last used" class="nowrap">
                  {k.last_used_at_us ? when(k.last_used_at_us) : "never"}
                </td>
                <td class="row-actions">
                  {k.revoked_at_us ? (
                    <Badge kind="revoked">revoked</Badge>
                  ) : (
                    <button type="button" class="danger" aria-label={`Revoke ${k.name}`} onClick={() => setRevoking(k)}>
                      Revoke
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {revoking ? (
        <Confirm
          title={`Revoke the key ${revoking.name}?`}
          confirm="Revoke key"
          danger
          onConfirm={() => void revoke(revoking)}
          onCancel={() => setRevoking(null)}
        >
          <p>
            Whatever uses <strong>
              <Text text={revoking.name} />
            </strong>{" "}
            ({revoking.id}) stops working at once. A revoked key cannot be restored: make a new one instead.
          </p>
        </Confirm>
      ) : null}
    </section>
  );
}

function Users({ me }: { me: Signed }) {
  const [users, setUsers] = useState<User[] | null>(null);
  const [roles, setRoles] = useState<Role[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [form, setForm] = useState({ username: "", password: "", roles: ["approver"] });
  const [disabling, setDisabling] = useState<User | null>(null);
  const load = () => {
    void api<User[]>("/v1/users")
      .then(setUsers)
      .catch((e) => setError(errorText(e)));
    void api<Role[]>("/v1/roles")
      .then(setRoles)
      .catch((e) => setError(errorText(e)));
  };
  useEffect(load, []);

  const create = async (event: Event) => {
    event.preventDefault();
    setError(null);
    try {
      await api("/v1/users", {
        method: "POST",
        body: { username: form.username, password: form.password, roles: form.roles },
      });
      setForm({ username: "", password: "", roles: ["approver"] });
      load();
    } catch (e) {
      setError(errorText(e));
    }
  };
  const change = async (user: User, body: Record<string, unknown>) => {
    setError(null);
    try {
      await api(`/v1/users/${encodeURIComponent(user.username)}`, { method: "PATCH", body });
      return true;
    } catch (e) {
      setError(errorText(e));
      return false;
    } finally {
      load();
    }
  };

  return (
    <section aria-labelledby="users-title">
      <h2 id="users-title">People</h2>
      <ErrorBox error={error} />
      <form class="inline-form people-form" onSubmit={create} aria-label="Add a person">
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
        <RolePicker
          legend="Roles"
          roles={roles}
          chosen={form.roles}
          onChange={(chosen) => setForm({ ...form, roles: chosen })}
          describe
        />
        <button type="submit" class="primary" disabled={!form.roles.length}>
          Add person
        </button>
      </form>
      {users === null ? (
        <Loading />
      ) : (
        <table class="events stack">
          <Head cols={["username", "roles", "since", "access"]} />
          <tbody>
            {users.map((u) => (
              <tr key={u.username} class={u.disabled_at_us ? "revoked" : ""}>
                <td data-label="username">
                  <Text text={u.username} />
                  {u.disabled_at_us ? <Badge kind="revoked">disabled</Badge> : null}
                </td>
                <td data-label="roles">
                  <RolesCell user={u} roles={roles} onSave={(next) => change(u, { roles: next })} />
                </td>
                <td data-label="since" class="nowrap">
                  {when(u.created_at_us)}
                </td>
                <td class="row-actions">
                  {u.username === me.username ? (
                    <span class="muted">you</span>
                  ) : u.disabled_at_us ? (
                    <button
                      type="button"
                      aria-label={`Enable ${u.username}`}
                      onClick={() => void change(u, { disabled: false })}
                    >
                      Enable
                    </button>
                  ) : (
                    <button
                      type="button"
                      class="danger"
                      aria-label={`Disable ${u.username}`}
                      onClick={() => setDisabling(u)}
                    >
                      Disable
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {disabling ? (
        <Confirm
          title={`Disable ${disabling.username}?`}
          confirm="Disable"
          danger
          onConfirm={() => {
            void change(disabling, { disabled: true }).then(() => setDisabling(null));
          }}
          onCancel={() => setDisabling(null)}
        >
          <p>
            <strong>
              <Text text={disabling.username} />
            </strong>{" "}
            is signed out everywhere at once and cannot sign in until enabled again. What they decided stays in the
            audit log.
          </p>
        </Confirm>
      ) : null}
    </section>
  );
}

// Roles as checkboxes, from the server's list (GET /v1/roles): the built-in ones, every group a
// person has, every group an active policy names. A group no person can hold is shown, not offered.
function RolePicker({
  legend,
  roles,
  chosen,
  onChange,
  describe = false,
}: {
  legend: string;
  roles: Role[] | null;
  chosen: string[];
  onChange: (chosen: string[]) => void;
  describe?: boolean;
}) {
  if (roles === null) return <Loading />;
  const toggle = (name: string) =>
    onChange(chosen.includes(name) ? chosen.filter((r) => r !== name) : [...chosen, name]);
  const shown = [...roles, ...chosen.filter((c) => !roles.some((r) => r.name === c)).map(unlisted)];
  return (
    <fieldset class="roles">
      <legend>{legend}</legend>
      {shown.map((r) => (
        <div class="role" key={r.name}>
          <label class="inline">
            <input
              type="checkbox"
              checked={chosen.includes(r.name)}
              disabled={!r.assignable}
              onChange={() => toggle(r.name)}
            />
            <Text text={r.name} />
          </label>
          {describe || !r.assignable ? (
            <span class="muted small">
              {r.assignable ? r.description : `the policy names role:${r.name}; role names are lower case, so no one can hold it`}
              {r.named_by.length ? ` (${r.named_by.join(", ")})` : ""}
            </span>
          ) : null}
        </div>
      ))}
      {chosen.length ? null : <span class="field-error">Choose at least one role.</span>}
    </fieldset>
  );
}

function unlisted(name: string): Role {
  return { name, description: "", people: 1, named_by: [], assignable: true };
}

function RolesCell({
  user,
  roles,
  onSave,
}: {
  user: User;
  roles: Role[] | null;
  onSave: (roles: string[]) => Promise<boolean>;
}) {
  const [editing, setEditing] = useState<string[] | null>(null);
  if (editing === null)
    return (
      <span class="roles-now">
        {user.roles.join(", ")}{" "}
        <button
          type="button"
          class="link"
          aria-label={`Change roles of ${user.username}`}
          onClick={() => setEditing([...user.roles])}
        >
          Change roles
        </button>
      </span>
    );
  const same = editing.length === user.roles.length && editing.every((r) => user.roles.includes(r));
  return (
    <form
      class="roles-edit"
      aria-label={`Roles of ${user.username}`}
      onSubmit={(e) => {
        e.preventDefault();
        void onSave(editing).then((ok) => ok && setEditing(null));
      }}
    >
      <RolePicker legend={`Roles of ${user.username}`} roles={roles} chosen={editing} onChange={setEditing} />
      <div class="actions">
        <button type="submit" class="primary" disabled={same || !editing.length}>
          Save roles
        </button>
        <button type="button" onClick={() => setEditing(null)}>
          Cancel
        </button>
      </div>
    </form>
  );
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
