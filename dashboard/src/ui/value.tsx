// Showing what a tool will run with: text whose hidden and direction-changing characters are
// drawn as named tokens (never the raw character, so nothing can reorder the page), JSON values
// with large parts collapsed to their size, and the warning a call holding such characters carries.
import { Fragment, type ComponentChildren } from "preact";
import { useMemo, useState } from "preact/hooks";
import { hazards, segments, size, tokenText, warning, type Token } from "../visible";

const WHAT: Record<Token["kind"], string> = {
  bidi: "a direction control: it changes the order the text around it is shown in",
  invisible: "an invisible character: it draws nothing but is part of the value",
  control: "a control character",
  "mixed-script": "a letter from another script than the rest of its word: it may pass for a look-alike",
};

function TokenSpan({ token }: { token: Token }) {
  return (
    <span class={`hz hz-${token.kind}`} title={WHAT[token.kind]}>
      {tokenText(token)}
    </span>
  );
}

/** A string as text, isolated from its surroundings, each hazard shown as a token. */
export function Text({ text }: { text: string }) {
  const parts = segments(text);
  return (
    <span class="text" dir="ltr">
      {parts.map((s, i) => (typeof s === "string" ? s : <TokenSpan key={i} token={s} />))}
    </span>
  );
}

const LONG_STRING = 2000; // characters shown before a string is collapsed
const MANY = 20; // entries shown inline before an object or array is collapsed
const PAGE = 100;

function isBig(v: unknown): boolean {
  if (typeof v === "string") return v.length > LONG_STRING;
  if (Array.isArray(v)) return v.length > MANY;
  if (v !== null && typeof v === "object") return Object.keys(v).length > MANY;
  return false;
}

/** A long string: its start, its size, and the rest on request. */
function LongString({ text, quoted }: { text: string; quoted: boolean }) {
  const [open, setOpen] = useState(false);
  const q = quoted ? '"' : "";
  return (
    <span class="text" dir="ltr">
      {q}
      <Text text={open ? text : text.slice(0, 300)} />
      {open ? q : "…"}{" "}
      <button type="button" class="collapsed" aria-expanded={open} onClick={() => setOpen(!open)}>
        {open ? "show less" : `show all (${size(text)})`}
      </button>
    </span>
  );
}

/** A large object or array, collapsed to its size; opened, its entries a page at a time. */
function Collapsed({ value }: { value: object }) {
  const [shown, setShown] = useState(0);
  const entries = useMemo(() => (shown ? Object.entries(value) : []), [value, shown > 0]);
  const array = Array.isArray(value);
  if (!shown)
    return (
      <button type="button" class="collapsed" aria-expanded="false" onClick={() => setShown(PAGE)}>
        {array ? "[" : "{"}
        {size(value)}
        {array ? "]" : "}"}
      </button>
    );
  return (
    <span class="tree">
      <button type="button" class="collapsed" aria-expanded="true" onClick={() => setShown(0)}>
        {array ? "[" : "{"}
        {size(value)}, collapse{array ? "]" : "}"}
      </button>
      <ul>
        {entries.slice(0, shown).map(([k, v]) => (
          <li key={k}>
            {array ? null : (
              <>
                "<Text text={k} />
                ":{" "}
              </>
            )}
            <Value value={v} quoted />
          </li>
        ))}
      </ul>
      {entries.length > shown ? (
        <button type="button" class="collapsed" onClick={() => setShown(shown + PAGE * 5)}>
          show {Math.min(PAGE * 5, entries.length - shown).toLocaleString("en-US")} more of{" "}
          {(entries.length - shown).toLocaleString("en-US")} not shown
        </button>
      ) : null}
    </span>
  );
}

/** A JSON value as compact JSON text; strings isolated, hazards as tokens, large parts collapsed. */
export function Value({ value, quoted = false }: { value: unknown; quoted?: boolean }) {
  if (typeof value === "string") {
    if (value.length > LONG_STRING) return <LongString text={value} quoted={quoted} />;
    return quoted ? (
      <span class="text" dir="ltr">
        "<Text text={value} />"
      </span>
    ) : (
      <Text text={value} />
    );
  }
  if (value === undefined) return null;
  if (value === null || typeof value !== "object") return <>{JSON.stringify(value)}</>;
  if (isBig(value)) return <Collapsed value={value} />;
  if (Array.isArray(value))
    return (
      <>
        [
        {value.map((v, i) => (
          <Fragment key={i}>
            {i ? ", " : ""}
            <Value value={v} quoted />
          </Fragment>
        ))}
        ]
      </>
    );
  return (
    <>
      {"{"}
      {Object.entries(value).map(([k, v], i) => (
        <Fragment key={k}>
          {i ? ", " : ""}
          <span class="text" dir="ltr">
            "<Text text={k} />"
          </span>
          : <Value value={v} quoted />
        </Fragment>
      ))}
      {"}"}
    </>
  );
}

const STRING_LITERAL = /"(?:[^"\\]|\\.)*"/g;
const WHOLE_LIMIT = 200_000; // characters of JSON text drawn before it is collapsed

/** Pretty JSON text (a whole record, a result): every string literal isolated, hazards as tokens. */
export function JsonText({ value }: { value: unknown }) {
  const text = useMemo(() => JSON.stringify(value, null, 2) ?? "undefined", [value]);
  const [open, setOpen] = useState(text.length <= WHOLE_LIMIT);
  if (!open)
    return (
      <p>
        <button type="button" class="collapsed" onClick={() => setOpen(true)}>
          show the whole JSON ({size(text).replace(" string", "")})
        </button>
      </p>
    );
  const parts: ComponentChildren[] = [];
  let at = 0;
  for (const m of text.matchAll(STRING_LITERAL)) {
    if (m.index > at) parts.push(text.slice(at, m.index));
    parts.push(
      <span class="text" dir="ltr" key={m.index}>
        <Text text={m[0]} />
      </span>,
    );
    at = m.index + m[0].length;
  }
  if (at < text.length) parts.push(text.slice(at));
  return (
    <pre class="json" dir="ltr">
      {parts}
    </pre>
  );
}

/** The warning a call (or record) holding hazards carries, naming where; nothing when clean. */
export function HazardWarning({ value, what = "call" }: { value: unknown; what?: string }) {
  const text = useMemo(() => warning(hazards(value)), [value]);
  if (!text) return null;
  return (
    <p class="hazard-warning" role="alert" dir="ltr">
      <strong>Look closely:</strong> {text.replace("this call", `this ${what}`)}. Each is shown as a marked token
      such as ⟨U+202E RLO⟩.
    </p>
  );
}

/** Whether a value holds any hazard (a badge in lists). */
export function hasHazards(value: unknown): boolean {
  return hazards(value).length > 0;
}
