// The "Trace ↗" link beside a record: to its trace in the user's tracing UI, when the server
// has a CLEARANCE_TRACE_URL template and the record a valid traceparent (see ../trace.ts).
import { createContext } from "preact";
import { useContext } from "preact/hooks";
import { traceLink, traceParts } from "../trace";
import { Fact } from "./common";

/** The server's trace URL template (from the signed-in session), or null: no links. */
export const TraceTemplate = createContext<string | null>(null);

/** A link to the trace `trace` (a record's traceparent) was made in; nothing when there is none to make. */
export function TraceLink({ trace }: { trace: unknown }) {
  const link = traceLink(useContext(TraceTemplate), trace);
  return link ? (
    <a class="trace-link" href={link} target="_blank" rel="noopener noreferrer">
      Trace <span aria-hidden="true">↗</span>
      <span class="visually-hidden"> (opens in a new tab)</span>
    </a>
  ) : null;
}

/** A "Trace" row of a <dl class="facts">: the link and the span the call was made in; no row without a link. */
export function TraceFact({ trace }: { trace: unknown }) {
  const shown = traceLink(useContext(TraceTemplate), trace) !== null;
  return (
    <Fact label="Trace" when={shown}>
      <TraceLink trace={trace} /> <span class="muted">in span <code>{traceParts(trace)?.spanId}</code></span>
    </Fact>
  );
}
