// The shell: who is signed in, the navigation, and which page the hash names.
import { useEffect, useState } from "preact/hooks";
import { api, ApiError, SIGNED_OUT, setCsrf } from "./api";
import { href, useRoute } from "./router";
import type { Signed } from "./types";
import { Login } from "./pages/login";
import { Approvals } from "./pages/approvals";
import { Audit } from "./pages/audit";
import { Sessions } from "./pages/sessions";
import { Policies } from "./pages/policies";
import { Costs } from "./pages/costs";
import { Admin } from "./pages/admin";
import { Grants } from "./pages/grants";
import { Shadow } from "./pages/shadow";
import { TraceTemplate } from "./ui/trace";

const PAGES: { name: string; title: string; admin?: boolean }[] = [
  { name: "approvals", title: "Approvals" },
  { name: "audit", title: "Audit log" },
  { name: "sessions", title: "Sessions" },
  { name: "grants", title: "Grants" },
  { name: "policies", title: "Policies", admin: true },
  { name: "shadow", title: "Shadow" },
  { name: "costs", title: "Costs" },
  { name: "admin", title: "Admin", admin: true },
];

export function App() {
  const [me, setMe] = useState<Signed | null | undefined>(undefined);
  const route = useRoute();

  useEffect(() => {
    api<Signed>("/v1/session")
      .then((signed) => {
        setCsrf(signed.csrf_token);
        setMe(signed);
      })
      .catch(() => setMe(null));
    const out = () => setMe(null);
    window.addEventListener(SIGNED_OUT, out);
    return () => window.removeEventListener(SIGNED_OUT, out);
  }, []);

  if (me === undefined) return <main class="page">Loading…</main>;
  if (me === null)
    return (
      <Login
        onSignedIn={(signed) => {
          setCsrf(signed.csrf_token);
          setMe(signed);
        }}
      />
    );

  const isAdmin = me.roles.includes("admin");
  const page = route.path[0] ?? "approvals";
  const signOut = async () => {
    try {
      await api("/v1/logout", { method: "POST" });
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
    }
    setMe(null);
  };

  return (
    <TraceTemplate.Provider value={me.trace_url ?? null}>
      <div class="shell">
        <header class="top">
          <a class="brand" href="#/approvals">
            Clearance
          </a>
          <nav aria-label="Pages">
            {PAGES.filter((p) => isAdmin || !p.admin).map((p) => (
              <a key={p.name} href={href([p.name])} aria-current={page === p.name ? "page" : undefined}>
                {p.title}
              </a>
            ))}
          </nav>
          <div class="who">
            <span title={me.roles.join(", ")}>{me.username}</span>
            <button type="button" class="link" onClick={signOut}>
              Sign out
            </button>
          </div>
        </header>
        <main class="page" id="main">
          {page === "approvals" && <Approvals route={route} me={me} />}
          {page === "audit" && <Audit route={route} />}
          {page === "sessions" && <Sessions route={route} />}
          {page === "grants" && <Grants route={route} me={me} />}
          {page === "policies" && isAdmin && <Policies route={route} />}
          {page === "shadow" && <Shadow route={route} isAdmin={isAdmin} />}
          {page === "costs" && <Costs route={route} isAdmin={isAdmin} />}
          {page === "admin" && isAdmin && <Admin me={me} />}
          {!PAGES.some((p) => p.name === page && (isAdmin || !p.admin)) && <p>There is no page here.</p>}
        </main>
      </div>
    </TraceTemplate.Provider>
  );
}
