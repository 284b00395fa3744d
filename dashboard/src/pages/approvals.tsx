// The approvals inbox: pending approvals live from the server's event stream, each showing what is
// at stake, narrowed by filters kept in the address, and one approval in detail beside them
// (approval.tsx). From the keyboard: j / k move, a approves, d denies, e edits, and after a
// decision the next approval opens.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { ago, count, soon } from "../format";
import { href, navigate, type Route } from "../router";
import type { Approval, Signed } from "../types";
import { Loading, Time, useNow } from "../ui/common";
import { visible } from "../visible";
import { ApprovalDetail, type Shortcuts } from "./approval";
import { Announcer, described, notify, NotifyToggle, useNotifications } from "./inbox_alerts";
import { Item } from "./inbox_item";
import { useLivePending } from "./inbox_live";

type Order = "expiry" | "newest";

// The filters, as the address keeps them (#/approvals?mine=1&tool=…&agent=…&environment=…&order=newest).
interface Filters {
  mine?: string;
  tool?: string;
  agent?: string;
  environment?: string;
  order?: string;
}

function filtersOf(query: URLSearchParams): Filters {
  const f: Filters = {};
  for (const name of ["mine", "tool", "agent", "environment", "order"] as const) {
    const v = query.get(name);
    if (v) f[name] = v;
  }
  return f;
}

// Typing in a field, or a key with a modifier, is never a shortcut.
function typing(event: KeyboardEvent): boolean {
  const target = event.target as HTMLElement | null;
  return (
    event.ctrlKey ||
    event.metaKey ||
    event.altKey ||
    event.defaultPrevented ||
    !!target?.closest?.("input, textarea, select, [contenteditable]:not([contenteditable='false'])")
  );
}

export function Approvals({
  route,
  me,
  toList,
}: {
  route: Route;
  me: Signed;
  toList: { current: (() => boolean) | null };
}) {
  const filters = useMemo(() => filtersOf(route.query), [route.query.toString()]);
  const streamQuery = useMemo(() => {
    const q = new URLSearchParams();
    if (filters.mine) q.set("mine", "true");
    for (const name of ["tool", "agent", "environment"] as const) if (filters[name]) q.set(name, filters[name]!);
    return q.toString();
  }, [filters]);
  const live = useLivePending(streamQuery);
  const items = live.items;
  const order: Order = filters.order === "newest" ? "newest" : "expiry";
  const selected = route.path[1];
  const listRef = useRef<HTMLUListElement>(null);
  const shortcuts = useRef<Shortcuts | null>(null);
  const focusNext = useRef<string | null>(null); // the item to focus once it is open
  const [message, setMessage] = useState({ text: "", at: 0 });
  const [lastDecided, setLastDecided] = useState<{ approval: Approval; verb: string } | null>(null);
  const notifications = useNotifications();

  // The server narrows the list; narrowing here too keeps the list right while a new one is on its way.
  const sorted = useMemo(() => {
    const list = (items ?? []).filter(
      (a) =>
        (!filters.mine || a.may_decide) &&
        (!filters.tool || a.tool === filters.tool) &&
        (!filters.agent || a.agent === filters.agent) &&
        (!filters.environment || a.environment === filters.environment),
    );
    list.sort((a, b) => (order === "expiry" ? a.expires_at_us - b.expires_at_us : b.created_at_us - a.created_at_us));
    return list;
  }, [items, order, filters]);

  useEffect(() => {
    document.title = items?.length ? `(${items.length}) Approvals · Clearance` : "Approvals · Clearance";
  }, [items]);

  const link = (id?: string) => href(id ? ["approvals", id] : ["approvals"], { ...filters });
  const open = (id: string, replace = true) => {
    focusNext.current = id;
    navigate(link(id), replace);
  };

  // New approvals: said to screen readers, and notified when turned on.
  useEffect(() => {
    const arrived = live.arrived.approvals;
    if (!arrived.length) return;
    const total = `${count(items?.length ?? 0)} pending`;
    setMessage({
      text:
        arrived.length === 1
          ? `New approval: ${described(arrived[0])}. ${total}.`
          : `${arrived.length} new approvals. ${total}.`,
      at: live.arrived.at,
    });
    notify(arrived, (id) => open(id, false));
  }, [live.arrived]);

  // Once the item asked for is open: focus it in the list, or the approval's title when the list is hidden (phone).
  useEffect(() => {
    const id = focusNext.current;
    if (!id || id !== selected) return;
    const item = listRef.current?.querySelector<HTMLAnchorElement>(`a[data-id="${CSS.escape(id)}"]`);
    if (item && item.offsetParent !== null) {
      focusNext.current = null;
      item.focus();
    } // else the approval focuses its title when it has loaded (focusTitle)
  }, [selected, sorted]);

  const move = (by: number) => {
    const ids = sorted.map((a) => a.id);
    if (!ids.length) return;
    const at = selected ? ids.indexOf(selected) : -1;
    const next = at === -1 ? (by > 0 ? 0 : ids.length - 1) : Math.min(ids.length - 1, Math.max(0, at + by));
    if (ids[next] !== selected) open(ids[next]);
  };

  useEffect(() => {
    const onKey = (event: KeyboardEvent) => {
      if (typing(event)) return;
      const decide = shortcuts.current;
      const keys: Record<string, (() => void) | undefined> = {
        j: () => move(1),
        k: () => move(-1),
        a: decide?.approve,
        d: decide?.deny,
        e: decide?.edit,
      };
      const act = keys[event.key];
      if (!act) return;
      event.preventDefault();
      act();
    };
    document.addEventListener("keydown", onKey);
    return () => document.removeEventListener("keydown", onKey);
  });

  // After a decision the next approval opens (the one below, else above); with none left, this one stays.
  const decided = (a: Approval, advance: boolean) => {
    const verb = a.status === "pending" ? "Voted to approve" : a.status === "denied" ? "Denied" : "Approved";
    setLastDecided({ approval: a, verb });
    const ids = sorted.map((x) => x.id);
    const at = ids.indexOf(a.id);
    const next = !advance ? undefined : at === -1 ? ids.find((id) => id !== a.id) : (ids[at + 1] ?? ids[at - 1]);
    const then = next ? " The next approval is open." : advance && ids.length <= 1 ? " Nothing else is waiting." : "";
    setMessage({ text: `${verb} ${described(a)}.${then}`, at: Date.now() });
    if (next) open(next);
    return next !== undefined;
  };

  // Arrow keys move through the list; Enter (the link's own) opens one.
  const onKeyDown = (event: KeyboardEvent) => {
    if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
    const links = Array.from(listRef.current?.querySelectorAll<HTMLAnchorElement>("a.item") ?? []);
    const at = links.indexOf(document.activeElement as HTMLAnchorElement);
    const next = links[Math.min(links.length - 1, Math.max(0, at + (event.key === "ArrowDown" ? 1 : -1)))];
    if (next) {
      event.preventDefault();
      next.focus();
    }
  };

  const setFilter = (name: keyof Filters, value: string) =>
    navigate(
      href(selected ? ["approvals", selected] : ["approvals"], { ...filters, [name]: value || undefined }),
      true,
    );
  const narrowed = ["mine", "tool", "agent", "environment"].filter((n) => filters[n as keyof Filters]).length;
  const tabbable = selected && sorted.some((a) => a.id === selected) ? selected : sorted[0]?.id;

  // The shell's "Skip to the pending list": opens the first (or the open) approval and focuses it in the list.
  useEffect(() => {
    toList.current = () => {
      if (!tabbable) return false;
      const link = listRef.current?.querySelector<HTMLAnchorElement>(`a[data-id="${CSS.escape(tabbable)}"]`);
      if (tabbable === selected && link) link.focus();
      else open(tabbable);
      return true;
    };
    return () => {
      toList.current = null;
    };
  });

  return (
    <>
      {!live.connected ? (
        <div class="offline" role="alert">
          <strong>Not connected to the server</strong> since <Time us={(live.lostAt ?? Date.now()) * 1000} />
          {items ? ": this list may be out of date." : "."} Deciding is paused until it is back; the page keeps
          trying to reconnect.
        </div>
      ) : null}
      <Announcer message={message} />
      <div class={selected ? "split has-detail" : "split"}>
        <section class="inbox" aria-label="Pending approvals">
          <div class="inbox-head">
            <h1>
              Pending <span class="count">{items ? count(sorted.length) : ""}</span>
            </h1>
            <span class={live.connected ? "live on" : "live"} role="status">
              {live.connected ? "live" : "reconnecting…"}
            </span>
          </div>
          <div class="inbox-tools">
            <button
              type="button"
              aria-pressed={!!filters.mine}
              onClick={() => setFilter("mine", filters.mine ? "" : "1")}
              title="only the approvals you may decide"
            >
              Mine to decide
            </button>
            <NotifyToggle {...notifications} />
            <details class="inbox-filters" open={narrowed > 0 || undefined}>
              <summary>Filters{narrowed ? ` (${narrowed})` : ""}</summary>
              <FilterSelect label="Tool" name="tool" filters={filters} items={items} set={setFilter} />
              <FilterSelect label="Agent" name="agent" filters={filters} items={items} set={setFilter} />
              <FilterSelect label="Environment" name="environment" filters={filters} items={items} set={setFilter} />
              <label class="inline">
                Order
                <select
                  value={order}
                  onChange={(e) => setFilter("order", e.currentTarget.value === "newest" ? "newest" : "")}
                >
                  <option value="expiry">nearest expiry first</option>
                  <option value="newest">newest first</option>
                </select>
              </label>
            </details>
          </div>
          {lastDecided ? (
            <p class="last-decided">
              {lastDecided.verb} <a href={link(lastDecided.approval.id)}>{described(lastDecided.approval)}</a>
            </p>
          ) : null}
          {items === null ? (
            live.connected ? (
              <Loading />
            ) : null
          ) : sorted.length === 0 ? (
            <p class="muted empty">
              {narrowed ? "Nothing waiting matches these filters." : "Nothing is waiting for a decision."}
            </p>
          ) : (
            <ItemList
              sorted={sorted}
              selected={selected}
              tabbable={tabbable}
              link={link}
              listRef={listRef}
              onKeyDown={onKeyDown}
            />
          )}
          {items !== null && items.length >= 500 ? (
            <p class="muted">The 500 nearest expiry are listed: narrow them with the filters to see others.</p>
          ) : null}
          <p class="muted keys">
            Keys: <kbd>j</kbd> / <kbd>k</kbd> next / previous, <kbd>a</kbd> approve, <kbd>d</kbd> deny with a note,{" "}
            <kbd>e</kbd> edit the arguments. In bold, the arguments the rule that asked reads.
          </p>
        </section>
        {selected ? (
          <section class="detail" aria-label="Approval">
            <a class="back" href={link()}>
              ← All pending
            </a>
            <ApprovalDetail
              key={selected}
              id={selected}
              me={me}
              connected={live.connected}
              shortcuts={shortcuts}
              focusTitle={focusNext}
              onDecided={decided}
            />
          </section>
        ) : (
          <div class="detail placeholder">
            {sorted.length ? (
              <p>
                Select an approval to see all its arguments, its rule and what happened before it in its session, and to
                decide it. Or press <kbd>j</kbd> to open the first, then <kbd>a</kbd> to approve or <kbd>d</kbd> to
                deny.
              </p>
            ) : (
              <p>
                Nothing to decide. New approvals appear in the list as they are asked for
                {notifications.state === "unsupported"
                  ? "."
                  : "; turn on notifications to hear of them while you are elsewhere."}
              </p>
            )}
          </div>
        )}
      </div>
    </>
  );
}

// A screenful: drawn first, so the list is there to read and use at once.
const FIRST_DRAWN = 30;

// The list, redrawn every second for the time left: only the items whose words changed are drawn again.
function ItemList(props: {
  sorted: Approval[];
  selected: string | undefined;
  tabbable: string | undefined;
  link: (id: string) => string;
  listRef: { current: HTMLUListElement | null };
  onKeyDown: (event: KeyboardEvent) => void;
}) {
  const now = useNow(1000);
  const minute = Math.floor(now / 60_000) * 60_000;
  // A screenful first; the rest in one go once that is painted (a task after the next frame: a state
  // set in the frame's callback would be drawn before that paint), not a chunk a frame.
  const [all, setAll] = useState(false);
  const more = props.sorted.length > FIRST_DRAWN;
  useEffect(() => {
    if (all || !more) return;
    let task = 0;
    const frame = requestAnimationFrame(() => {
      task = window.setTimeout(() => setAll(true));
    });
    return () => {
      cancelAnimationFrame(frame);
      clearTimeout(task);
    };
  }, [all, more]);
  const at = props.selected ? props.sorted.findIndex((a) => a.id === props.selected) : -1;
  const shown = all ? props.sorted : props.sorted.slice(0, Math.max(FIRST_DRAWN, at + 1));
  return (
    <ul class="items" ref={props.listRef} onKeyDown={props.onKeyDown}>
      {shown.map((a) => {
        const left = a.expires_at_us / 1000 - now;
        return (
          <Item
            key={a.id}
            approval={a}
            href={props.link(a.id)}
            selected={a.id === props.selected}
            tabbable={a.id === props.tabbable}
            left={left <= 0 ? "expired" : `${soon(left / 1000)} left`}
            urgent={left < 60_000}
            asked={ago(a.created_at_us, minute)}
          />
        );
      })}
    </ul>
  );
}

// A filter's choices: the values in the list, and the one chosen (which a narrowed list may not hold).
function FilterSelect({
  label,
  name,
  filters,
  items,
  set,
}: {
  label: string;
  name: "tool" | "agent" | "environment";
  filters: Filters;
  items: Approval[] | null;
  set: (name: keyof Filters, value: string) => void;
}) {
  const chosen = filters[name] ?? "";
  const values = useMemo(() => {
    const all = new Set((items ?? []).map((a) => a[name]));
    if (chosen) all.add(chosen);
    return [...all].sort();
  }, [items, chosen]);
  return (
    <label class="inline">
      {label}
      <select value={chosen} onChange={(e) => set(name, e.currentTarget.value)}>
        <option value="">all</option>
        {values.map((v) => (
          <option key={v} value={v}>
            {visible(v)}
          </option>
        ))}
      </select>
    </label>
  );
}
