// The shell: who is signed in, the navigation, and which page the hash names.
import { useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";
import { api, ApiError, SIGNED_OUT, setCsrf } from "./api";
import { href, useRoute } from "./router";
import type { Signed } from "./types";
import { Login } from "./pages/login";
import { Approvals } from "./pages/approvals";
import { Decisions } from "./pages/decisions";
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
  { name: "decisions", title: "Decisions" },
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
  const toList = useRef<(() => boolean) | null>(null); // set by the inbox while it is shown
  useTitle(route.path[0] ?? "approvals", me);
  useFocusOnNewPage([route.path[0] ?? "approvals", ...route.path.slice(1)].join("/")); // "" is the inbox too

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
        <a class="skip" href="#main" onClick={skipToMain}>
          Skip to content
        </a>
        {page === "approvals" ? (
          <a class="skip" href={href(["approvals"])} onClick={(event) => skipTo(event, toList.current)}>
            Skip to the pending list
          </a>
        ) : null}
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
        <main class="page" id="main" tabIndex={-1}>
          {page === "approvals" && <Approvals route={route} me={me} toList={toList} />}
          {page === "decisions" && <Decisions route={route} />}
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

// == shell: titles, the skip link and focus on a new page ==

// "Audit log — Clearance": set before the page's own effects run, so the inbox can add its count.
function useTitle(page: string, me: Signed | null | undefined) {
  useLayoutEffect(() => {
    if (me === undefined) return;
    const known = me && PAGES.find((p) => p.name === page && (me.roles.includes("admin") || !p.admin));
    document.title = `${me === null ? "Sign in" : known ? known.title : "Not found"} — Clearance`;
  }, [page, me]);
}

// The skip link moves focus without touching the hash, which names the page.
function skipToMain(event: Event) {
  event.preventDefault();
  const main = document.getElementById("main");
  main?.focus();
  main?.scrollIntoView();
}

// The inbox's second skip link: the inbox opens its first approval and focuses it in the list
// (main when the list is not there yet), so Tab, Tab, Enter reaches it and one key decides it.
function skipTo(event: Event, go: (() => boolean) | null) {
  if (!go?.()) skipToMain(event);
  else event.preventDefault();
}

// On a new page (or when the element that had focus went away), focus its heading, or <main>
// until the heading has loaded, so keyboard and screen-reader users start at the new content.
function useFocusOnNewPage(path: string) {
  const last = useRef<string | null>(null);
  useEffect(() => {
    const before = last.current;
    last.current = path;
    const lost = !document.activeElement || document.activeElement === document.body;
    if (before === null || (before.split("/")[0] === path.split("/")[0] && !lost)) return;
    const main = document.getElementById("main");
    if (!main) return;
    const heading = () => {
      const h1 = main.querySelector("h1");
      if (h1) {
        h1.tabIndex = -1;
        h1.focus();
      }
      return h1 !== null;
    };
    if (heading()) return;
    main.focus();
    const watch = new MutationObserver(() => {
      if (document.activeElement !== main || heading()) watch.disconnect();
    });
    watch.observe(main, { childList: true, subtree: true });
    const stop = window.setTimeout(() => watch.disconnect(), 5000);
    return () => {
      watch.disconnect();
      window.clearTimeout(stop);
    };
  }, [path]);
}
