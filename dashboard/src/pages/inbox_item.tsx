// One pending approval in the inbox's list: what is at stake (the arguments its rules read first,
// then the others, each value cut short), where (environment), who asks (agent, and the person
// it acts for), how long is left, and enough of its id that two alike calls never look the same.
// Light on purpose: 500 of them are drawn at once, and redrawn only when they change.
import { memo } from "preact/compat";
import type { Approval } from "../types";
import { Badge } from "../ui/common";
import { hasHazards, Text } from "../ui/value";
import { size } from "../visible";

const STAKES = 4; // arguments shown in an item (all those the rules read, up to 6)
const ROOM = 60; // characters of a value shown in an item

interface Stake {
  name: string;
  value: string | null; // null: the call has no such argument
  read: boolean; // a rule that asked reads it
}

interface Seen {
  stakes: Stake[];
  more: number;
  hazard: boolean;
}

const seen = new WeakMap<Approval, Seen>(); // an approval's arguments never change while it is pending

function cut(text: string, room: number): string {
  if (text.length <= room) return text;
  const end = text.charCodeAt(room - 1);
  return text.slice(0, end >= 0xd800 && end <= 0xdbff ? room - 1 : room) + "…"; // never half a pair
}

/** A value in a line of about `room` characters: strings as they are (quoted inside structures), the
 * rest as JSON, deep or long parts cut. */
export function brief(value: unknown, room = ROOM): string {
  let out = "";
  const add = (text: string) => {
    out += text;
    return out.length < room;
  };
  const walk = (v: unknown, depth: number): boolean => {
    if (typeof v === "string") return add(depth ? `"${cut(v, room)}"` : cut(v, room));
    if (v === null || typeof v !== "object") return add(String(JSON.stringify(v)));
    const list = Array.isArray(v);
    if (depth >= 2) return add(list ? `[${size(v)}]` : `{${size(v)}}`);
    if (!add(list ? "[" : "{")) return false;
    let first = true;
    for (const key of list ? v.keys() : Object.keys(v)) {
      if (!first && !add(", ")) return false;
      first = false;
      if (!list && !add(`${cut(String(key), room)}: `)) return false;
      if (!walk((v as Record<string | number, unknown>)[key as string], depth + 1)) return false;
    }
    return add(list ? "]" : "}");
  };
  walk(value, 0);
  return cut(out, room);
}

function seenOf(a: Approval): Seen {
  let found = seen.get(a);
  if (!found) {
    const names = Object.keys(a.args);
    const reads = a.reads.slice(0, 6);
    const rest = names.filter((n) => !reads.includes(n)).slice(0, Math.max(0, STAKES - reads.length));
    const stakes = [
      ...reads.map((name) => ({ name, value: name in a.args ? brief(a.args[name]) : null, read: true })),
      ...rest.map((name) => ({ name, value: brief(a.args[name]), read: false })),
    ];
    const shown = stakes.filter((s) => s.value !== null).length;
    found = { stakes, more: names.length - shown, hazard: hasHazards([a.tool, a.args]) };
    seen.set(a, found);
  }
  return found;
}

// Production in red, staging in amber, the rest plain: where a call would run, at a glance.
function envKind(env: string): string {
  return /prod|live/i.test(env) ? "env env-prod" : /stag|pre|uat/i.test(env) ? "env env-stage" : "env";
}

export function Environment({ name }: { name: string }) {
  return (
    <span class={`badge ${envKind(name)}`} title="environment">
      <Text text={name} />
    </span>
  );
}

export interface ItemProps {
  approval: Approval;
  href: string;
  selected: boolean;
  tabbable: boolean; // the list is one stop for Tab: the selected item, else the first
  left: string; // "12m left", from the list's clock
  urgent: boolean; // under a minute left
  asked: string; // "3m ago"
}

function ItemView({ approval: a, href, selected, tabbable, left, urgent, asked }: ItemProps) {
  const { stakes, more, hazard } = seenOf(a);
  return (
    <li>
      <a
        href={href}
        class={selected ? "item selected" : "item"}
        aria-current={selected ? "true" : undefined}
        tabIndex={tabbable ? 0 : -1}
        data-id={a.id}
      >
        <span class="item-title">
          <code>
            <Text text={a.tool} />
          </code>{" "}
          <span class="muted">by</span> <Text text={a.agent} /> <Environment name={a.environment} />
          {hazard ? <Badge kind="hazard">hidden characters</Badge> : null}
          {a.waiter_gone ? <Badge kind="waiter_gone">waiter gone</Badge> : null}
          <span class={urgent ? "countdown urgent" : "countdown"}>{left}</span>
        </span>
        {stakes.length ? (
          <span class="stakes">
            {stakes.map((s) => (
              <span
                class={s.read ? "stake read" : "stake"}
                key={s.name}
                title={s.read ? "read by the rule that asked" : undefined}
              >
                <span class="stake-name">
                  <Text text={s.name} />
                </span>{" "}
                {s.value === null ? (
                  <span class="muted">missing</span>
                ) : (
                  <span class="stake-value" dir="ltr">
                    <Text text={s.value} />
                  </span>
                )}
              </span>
            ))}
            {more > 0 ? <span class="muted">+{more} more</span> : null}
          </span>
        ) : (
          <span class="stakes muted">no arguments</span>
        )}
        <span class="item-reason">
          <Text text={a.reason} />
        </span>
        <span class="item-meta">
          {a.requested_by ? (
            <>
              for <Text text={a.requested_by} /> ·{" "}
            </>
          ) : null}
          requested {asked} · <span title={a.id}>…{a.id.slice(-6)}</span>
          {a.may_decide ? <span class="yours"> · yours to decide</span> : null}
        </span>
      </a>
    </li>
  );
}

export const Item = memo(ItemView);
