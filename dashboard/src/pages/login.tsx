import { useState } from "preact/hooks";
import { api, ApiError, errorText } from "../api";
import type { Signed } from "../types";
import { ErrorBox } from "../ui/common";

export function Login({ onSignedIn }: { onSignedIn: (signed: Signed) => void }) {
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (event: Event) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      onSignedIn(await api<Signed>("/v1/login", { method: "POST", body: { username, password } }));
    } catch (e) {
      if (e instanceof ApiError && e.status === 429 && e.retryAfter)
        setError(`Too many failed sign-ins. Try again in ${Math.ceil(e.retryAfter / 60)} min.`);
      else setError(errorText(e));
    } finally {
      setBusy(false);
    }
  };

  return (
    <main class="login">
      <form onSubmit={submit} class="card">
        <h1>Clearance</h1>
        <label>
          Username
          <input
            name="username"
            autoComplete="username"
            required
            value={username}
            onInput={(e) => setUsername(e.currentTarget.value)}
          />
        </label>
        <label>
          Password
          <input
            name="password"
            type="password"
            autoComplete="current-password"
            required
            value={password}
            onInput={(e) => setPassword(e.currentTarget.value)}
          />
        </label>
        <ErrorBox error={error} />
        <button type="submit" class="primary" disabled={busy}>
          Sign in
        </button>
        <p class="muted small">
          No account? An admin adds people here under Admin, or on the server with{" "}
          <code>clearance users create NAME --role approver</code>.
        </p>
      </form>
    </main>
  );
}
