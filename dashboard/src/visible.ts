// Arguments as a person must see them: every hidden, direction-changing or look-alike character
// named. The twin of src/clearance/_visible.py (read its docstring): the same explicit tables,
// so both say the same thing whatever Unicode the browser knows; tests/visible_cases.json holds
// what both must answer, and the browser tests run this file's functions on it.

export type Kind = "bidi" | "invisible" | "control" | "mixed-script";

export interface Token {
  cp: number;
  kind: Kind;
  name: string;
}

export type Segment = string | Token;

const C0 =
  "NUL SOH STX ETX EOT ENQ ACK BEL BS HT LF VT FF CR SO SI DLE DC1 DC2 DC3 DC4 NAK SYN ETB CAN EM SUB ESC FS GS RS US".split(
    " ",
  );
const C1 =
  "PAD HOP BPH NBH IND NEL SSA ESA HTS HTJ VTS PLD PLU RI SS2 SS3 DCS PU1 PU2 STS CCH MW SPA EPA SOS SGCI SCI CSI ST OSC PM APC".split(
    " ",
  );

const NAMED = new Map<number, [Kind, string]>([
  [0x061c, ["bidi", "ALM"]],
  [0x200e, ["bidi", "LRM"]],
  [0x200f, ["bidi", "RLM"]],
  [0x202a, ["bidi", "LRE"]],
  [0x202b, ["bidi", "RLE"]],
  [0x202c, ["bidi", "PDF"]],
  [0x202d, ["bidi", "LRO"]],
  [0x202e, ["bidi", "RLO"]],
  [0x2066, ["bidi", "LRI"]],
  [0x2067, ["bidi", "RLI"]],
  [0x2068, ["bidi", "FSI"]],
  [0x2069, ["bidi", "PDI"]],
  [0x00ad, ["invisible", "SHY"]],
  [0x034f, ["invisible", "CGJ"]],
  [0x115f, ["invisible", "HANGUL CHOSEONG FILLER"]],
  [0x1160, ["invisible", "HANGUL JUNGSEONG FILLER"]],
  [0x17b4, ["invisible", "KHMER INHERENT AQ"]],
  [0x17b5, ["invisible", "KHMER INHERENT AA"]],
  [0x180e, ["invisible", "MVS"]],
  [0x200b, ["invisible", "ZWSP"]],
  [0x200c, ["invisible", "ZWNJ"]],
  [0x200d, ["invisible", "ZWJ"]],
  [0x2028, ["invisible", "LSEP"]],
  [0x2029, ["invisible", "PSEP"]],
  [0x2060, ["invisible", "WJ"]],
  [0x2061, ["invisible", "FUNCTION APPLICATION"]],
  [0x2062, ["invisible", "INVISIBLE TIMES"]],
  [0x2063, ["invisible", "INVISIBLE SEPARATOR"]],
  [0x2064, ["invisible", "INVISIBLE PLUS"]],
  [0x3164, ["invisible", "HANGUL FILLER"]],
  [0xfeff, ["invisible", "ZWNBSP"]],
  [0xffa0, ["invisible", "HALFWIDTH HANGUL FILLER"]],
  [0xfff9, ["invisible", "IAA"]],
  [0xfffa, ["invisible", "IAS"]],
  [0xfffb, ["invisible", "IAT"]],
  [0xe0001, ["invisible", "LANGUAGE TAG"]],
  [0xe007f, ["invisible", "CANCEL TAG"]],
]);

const RANGES: [number, number, Kind, string][] = [
  [0x0600, 0x0605, "invisible", "FORMAT"],
  [0x06dd, 0x06dd, "invisible", "FORMAT"],
  [0x070f, 0x070f, "invisible", "FORMAT"],
  [0x0890, 0x0891, "invisible", "FORMAT"],
  [0x08e2, 0x08e2, "invisible", "FORMAT"],
  [0x180b, 0x180d, "invisible", "FVS"],
  [0x180f, 0x180f, "invisible", "FVS"],
  [0x206a, 0x206f, "invisible", "FORMAT"],
  [0xd800, 0xdfff, "control", "SURROGATE"],
  [0xfe00, 0xfe0f, "invisible", "VS"],
  [0x110bd, 0x110bd, "invisible", "FORMAT"],
  [0x110cd, 0x110cd, "invisible", "FORMAT"],
  [0x13430, 0x1343f, "invisible", "FORMAT"],
  [0x1bca0, 0x1bca3, "invisible", "FORMAT"],
  [0x1d173, 0x1d17a, "invisible", "FORMAT"],
  [0xe0000, 0xe007f, "invisible", "TAG"],
  [0xe0100, 0xe01ef, "invisible", "VS"],
];

const SCRIPTS: [string, [number, number][]][] = [
  [
    "Latin",
    [
      [0x0041, 0x005a],
      [0x0061, 0x007a],
      [0x00aa, 0x00aa],
      [0x00ba, 0x00ba],
      [0x00c0, 0x00d6],
      [0x00d8, 0x00f6],
      [0x00f8, 0x02af],
      [0x1e00, 0x1eff],
      [0x2c60, 0x2c7f],
      [0xa720, 0xa7ff],
      [0xab30, 0xab5a],
      [0xff21, 0xff3a],
      [0xff41, 0xff5a],
    ],
  ],
  [
    "Greek",
    [
      [0x0370, 0x03ff],
      [0x1f00, 0x1fff],
    ],
  ],
  [
    "Cyrillic",
    [
      [0x0400, 0x052f],
      [0x1c80, 0x1c8f],
      [0x2de0, 0x2dff],
      [0xa640, 0xa69f],
    ],
  ],
  [
    "Armenian",
    [
      [0x0531, 0x058f],
      [0xfb13, 0xfb17],
    ],
  ],
  [
    "Cherokee",
    [
      [0x13a0, 0x13ff],
      [0xab70, 0xabbf],
    ],
  ],
];

const u = (cp: number) => `\\u{${cp.toString(16)}}`;
const charClass = (ranges: [number, number][], flags: string) =>
  new RegExp(`[${ranges.map(([a, b]) => `${u(a)}-${u(b)}`).join("")}]`, flags);

const HAZARD_RANGES: [number, number][] = [
  [0x00, 0x08],
  [0x0b, 0x1f],
  [0x7f, 0x9f],
  ...[...NAMED.keys()].map((cp): [number, number] => [cp, cp]),
  ...RANGES.map(([a, b]): [number, number] => [a, b]),
];
const HAZARD = charClass(HAZARD_RANGES, "u");
const HAZARD_ALL = charClass(HAZARD_RANGES, "gu");
// Only a string holding a letter of a script other than Latin can hold a mixed-script word.
const NOT_LATIN = charClass(
  SCRIPTS.slice(1).flatMap(([, ranges]) => ranges),
  "u",
);
const LETTER_OR_MARK = /[\p{L}\p{M}]/u;

/** The kind and short name of a hidden, direction-changing or control character, else null. */
export function describe(cp: number): [Kind, string] | null {
  if (cp <= 0x1f && cp !== 0x09 && cp !== 0x0a) return ["control", C0[cp]];
  if (cp === 0x7f) return ["control", "DEL"];
  if (cp >= 0x80 && cp <= 0x9f) return ["control", C1[cp - 0x80]];
  const named = NAMED.get(cp);
  if (named) return named;
  for (const [first, last, kind, name] of RANGES) {
    if (cp < first || cp > last) continue;
    if (name === "VS") return [kind, `VS${cp <= 0xfe0f ? cp - 0xfe00 + 1 : cp - 0xe0100 + 17}`];
    if (name === "FVS") return [kind, `FVS${cp === 0x180f ? 4 : cp - 0x180b + 1}`];
    if (name === "TAG" && cp >= 0xe0020 && cp <= 0xe007e)
      return [kind, cp === 0xe0020 ? "TAG SPACE" : `TAG ${String.fromCodePoint(cp - 0xe0000)}`];
    return [kind, name];
  }
  return null;
}

/** Which of the scripts that look alike a letter belongs to (Latin, Greek, …), else null. */
export function script(cp: number): string | null {
  for (const [name, ranges] of SCRIPTS) if (ranges.some(([a, b]) => cp >= a && cp <= b)) return name;
  return null;
}

export function tokenText(t: Token): string {
  return `⟨U+${t.cp.toString(16).toUpperCase().padStart(4, "0")} ${t.name}⟩`;
}

// UTF-16 positions of the letters not of their word's main script, in words that mix scripts.
function foreignLetters(text: string): Set<number> {
  const out = new Set<number>();
  let word: [number, string | null][] = [];
  const end = () => {
    const counts = new Map<string, number>();
    for (const [, s] of word) if (s) counts.set(s, (counts.get(s) ?? 0) + 1);
    if (counts.size > 1) {
      let main = "";
      for (const [name] of SCRIPTS) if ((counts.get(name) ?? 0) > (counts.get(main) ?? 0)) main = name;
      for (const [at, s] of word) if (s && s !== main) out.add(at);
    }
    word = [];
  };
  let at = 0;
  for (const char of text) {
    if (LETTER_OR_MARK.test(char)) word.push([at, script(char.codePointAt(0)!)]);
    else if (word.length) end();
    at += char.length;
  }
  if (word.length) end();
  return out;
}

/** `text` cut into plain runs and tokens, in order. */
export function segments(text: string): Segment[] {
  const foreign = NOT_LATIN.test(text) ? foreignLetters(text) : new Set<number>();
  if (!foreign.size && !HAZARD.test(text)) return text ? [text] : [];
  const at = new Set(foreign);
  HAZARD_ALL.lastIndex = 0;
  for (const m of text.matchAll(HAZARD_ALL)) at.add(m.index);
  const out: Segment[] = [];
  let plain = 0;
  for (const i of [...at].sort((a, b) => a - b)) {
    const cp = text.codePointAt(i)!;
    // A lone high surrogate must not read the next unit as its pair.
    const char = cp >= 0xd800 && cp <= 0xdfff ? text[i] : String.fromCodePoint(cp);
    const code = char.length === 1 ? char.charCodeAt(0) : cp;
    const [kind, name] = describe(code) ?? ["mixed-script", script(code) ?? ""];
    if (plain < i) out.push(text.slice(plain, i));
    out.push({ cp: code, kind, name });
    plain = i + char.length;
  }
  if (plain < text.length) out.push(text.slice(plain));
  return out;
}

/** `text` with every hazard replaced by its token: `refund⟨U+202E RLO⟩txt.exe`. */
export function visible(text: string): string {
  return segments(text)
    .map((s) => (typeof s === "string" ? s : tokenText(s)))
    .join("");
}

export interface Hazard {
  path: string; // a JSON pointer; "" is the value itself; of the member when inKey
  inKey: boolean;
  token: Token;
}

export function pointer(parts: (string | number)[]): string {
  return parts.map((p) => "/" + String(p).replace(/~/g, "~0").replace(/\//g, "~1")).join("");
}

function walk(value: unknown, parts: (string | number)[], out: Hazard[]): void {
  if (typeof value === "string") {
    for (const s of segments(value)) if (typeof s !== "string") out.push({ path: pointer(parts), inKey: false, token: s });
  } else if (Array.isArray(value)) {
    value.forEach((item, i) => walk(item, [...parts, i], out));
  } else if (value !== null && typeof value === "object") {
    for (const [key, item] of Object.entries(value)) {
      for (const s of segments(key))
        if (typeof s !== "string") out.push({ path: pointer([...parts, key]), inKey: true, token: s });
      walk(item, [...parts, key], out);
    }
  }
}

/** Every hazardous character in a JSON value's strings and keys, in document order. */
export function hazards(value: unknown): Hazard[] {
  const out: Hazard[] = [];
  walk(value, [], out);
  return out;
}

/** The sentence an approver reads above a call that holds hazards (null when none). */
export function warning(found: Hazard[], limit = 8): string | null {
  if (!found.length) return null;
  const places = new Map<string, { path: string; inKey: boolean; names: string[] }>();
  for (const h of found) {
    const id = `${h.inKey ? "k" : "v"}${h.path}`;
    const place = places.get(id) ?? { path: h.path, inKey: h.inKey, names: [] };
    places.set(id, place);
    const label = tokenText(h.token).slice(1, -1);
    if (!place.names.includes(label)) place.names.push(label);
  }
  const kinds = new Set(found.map((h) => h.token.kind));
  const what: string[] = [];
  if ([...kinds].some((k) => k !== "mixed-script")) what.push("invisible or direction-changing characters");
  if (kinds.has("mixed-script")) what.push("letters from another script inside a word");
  const all = [...places.values()];
  const listed = all.slice(0, limit).map(({ path, inKey, names }) => {
    const where = (inKey ? "the key " : "") + (path ? visible(path) : "the value");
    const more = names.length > 3 ? `, +${names.length - 3} more` : "";
    return `${where} (${names.slice(0, 3).join(", ")}${more})`;
  });
  if (all.length > limit) listed.push(`and ${all.length - limit} more places`);
  return `this call holds ${what.join(" and ")}: ${listed.join(", ")}`;
}

/** JSON text of a value with every hazard written as a \u escape: exact, and safe to edit. */
export function escapedJson(value: unknown, indent?: number): string {
  return segments(JSON.stringify(value, null, indent))
    .map((s) => {
      if (typeof s === "string") return s;
      const units = String.fromCodePoint(s.cp);
      return [...Array(units.length).keys()]
        .map((i) => `\\u${units.charCodeAt(i).toString(16).padStart(4, "0")}`)
        .join("");
    })
    .join("");
}

/** How big a value is, for a collapsed one: "5,000 keys", "2.1 MB string". */
export function size(value: unknown): string {
  if (typeof value === "string") return `${bytes(utf8Length(value))} string`;
  if (Array.isArray(value)) return `${value.length.toLocaleString("en-US")} item${value.length === 1 ? "" : "s"}`;
  if (value !== null && typeof value === "object") {
    const n = Object.keys(value).length;
    return `${n.toLocaleString("en-US")} key${n === 1 ? "" : "s"}`;
  }
  return "";
}

function utf8Length(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

function bytes(n: number): string {
  if (n < 1000) return `${n} B`;
  if (n < 1_000_000) return `${(n / 1000).toFixed(1)} kB`;
  return `${(n / 1_000_000).toFixed(1)} MB`;
}
