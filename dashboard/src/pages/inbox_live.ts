// The pending list, live from the server's event stream (GET /v1/approvals/stream), narrowed by
// the inbox's filters; whether it is current (and since when it may not be); which approvals
// arrived since the last list. An approval unchanged since the last list keeps its object, so
// the list redraws only the items that changed.
import { useEffect, useRef, useState } from "preact/hooks";
import { api } from "../api";
import type { Approval } from "../types";

export interface Live {
  items: Approval[] | null; // null until the first list arrives
  connected: boolean;
  lostAt: number | null; // ms since the epoch: when the stream was lost (the list may be out of date since)
  arrived: { approvals: Approval[]; at: number }; // new since the list before (not in the first list)
}

const RETRY_MS = 3000;

// What may change while an approval is pending: if none of it did, it is the same item.
function signature(a: Approval): string {
  return [a.status, a.expires_at_us, a.votes.length, a.escalated_at_us, a.waiter_gone, a.may_decide].join("|");
}

export function useLivePending(query: string): Live {
  const [live, setLive] = useState<Live>({
    items: null,
    connected: true,
    lostAt: null,
    arrived: { approvals: [], at: 0 },
  });
  const known = useRef(new Map<string, Approval>());

  useEffect(() => {
    let source: EventSource | null = null;
    let retry = 0;
    let first = true; // the first list of these filters announces nothing
    const lost = () => setLive((now) => (now.connected ? { ...now, connected: false, lostAt: Date.now() } : now));
    const open = () => {
      source = new EventSource(`/v1/approvals/stream${query ? `?${query}` : ""}`);
      source.addEventListener("pending", (event) => {
        const listed = JSON.parse((event as MessageEvent<string>).data) as Approval[];
        const before = known.current;
        const after = new Map<string, Approval>();
        const arrived: Approval[] = [];
        const items = listed.map((a) => {
          const old = before.get(a.id);
          const kept = old && signature(old) === signature(a) ? old : a;
          if (!old && !first) arrived.push(a);
          after.set(a.id, kept);
          return kept;
        });
        known.current = after;
        first = false;
        setLive((now) => ({
          items,
          connected: true,
          lostAt: null,
          arrived: arrived.length ? { approvals: arrived, at: Date.now() } : now.arrived,
        }));
      });
      source.onerror = () => {
        lost();
        // A stream the server ended with an error (or a proxy's page) is not retried by the
        // browser: open it again. A session that ended sends the person to sign in (api does).
        if (source?.readyState === EventSource.CLOSED) {
          source.close();
          api("/v1/session").catch(() => undefined);
          retry = window.setTimeout(open, RETRY_MS);
        }
      };
    };
    known.current = new Map();
    setLive((now) => ({ ...now, arrived: { approvals: [], at: 0 } }));
    open();
    return () => {
      window.clearTimeout(retry);
      source?.close();
    };
  }, [query]);
  return live;
}
