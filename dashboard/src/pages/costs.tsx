// Costs: LLM spend over time by model and by agent (charts), totals by model, day, agent and
// session; unpriced calls are flagged (never shown as $0); the budgets in use and how much of
// each is spent.
import { useEffect, useState } from "preact/hooks";
import { api, errorText } from "../api";
import type { BudgetUse, Spend as SpendOverTime, Usage } from "../types";
import { count, duration, usd } from "../format";
import { href, navigate, type Route } from "../router";
import { Badge, ErrorBox, Head, Loading, Spend } from "../ui/common";
import { Bars } from "../ui/bars";
import { SpendChart } from "../ui/spend_chart";
import { Text } from "../ui/value";
import { visible } from "../visible";

const GROUPS = ["model", "day", "agent", "session"] as const;
type Group = (typeof GROUPS)[number];
const RANGES: Record<string, number | null> = { "24 hours": 1, "7 days": 7, "30 days": 30, "all time": null };
const BUDGETS_SHOWN = 20;

export function Costs({ route }: { route: Route; isAdmin: boolean }) {
  const by = (GROUPS as readonly string[]).includes(route.query.get("by") ?? "") ? (route.query.get("by") as Group) : "model";
  const range = route.query.get("range") ?? "30 days";
  const [rows, setRows] = useState<Usage[] | null>(null);
  const [budgets, setBudgets] = useState<BudgetUse[] | null>(null);
  const [spend, setSpend] = useState<SpendOverTime[] | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    const days = RANGES[range] ?? null;
    setRows(null);
    api<Usage[]>("/v1/usage", { query: { by, since_us: days ? (Date.now() - days * 86400_000) * 1000 : null } })
      .then((found) => setRows(by === "day" ? found : [...found].sort((a, b) => Number(b.cost_usd) - Number(a.cost_usd))))
      .catch((e) => setError(errorText(e)));
  }, [by, range]);
  useEffect(() => {
    const days = RANGES[range] ?? null;
    // Buckets start at the viewer's midnight; the server picks hours for a day, days for longer.
    const query = {
      since_us: days ? (Date.now() - days * 86400_000) * 1000 : null,
      utc_offset_minutes: -new Date().getTimezoneOffset(),
    };
    setSpend(null);
    Promise.all([
      api<SpendOverTime>("/v1/spend", { query: { ...query, by: "model" } }),
      api<SpendOverTime>("/v1/spend", { query: { ...query, by: "agent" } }),
    ])
      .then(setSpend)
      .catch((e) => setError(errorText(e)));
  }, [range]);
  useEffect(() => {
    api<BudgetUse[]>("/v1/budgets", { query: { limit: BUDGETS_SHOWN } })
      .then(setBudgets)
      .catch((e) => setError(errorText(e)));
  }, []);

  const go = (next: { by?: string; range?: string }) => navigate(href(["costs"], { by, range, ...next }), true);
  const total = (rows ?? []).reduce((sum, r) => sum + Number(r.cost_usd), 0);
  const unpriced = (rows ?? []).reduce((sum, r) => sum + r.unpriced_calls, 0);
  return (
    <section>
      <h1>Costs</h1>
      <div class="toolbar">
        <div role="tablist" aria-label="Group by" class="tabs">
          {GROUPS.map((g) => (
            <button key={g} type="button" role="tab" aria-selected={g === by} onClick={() => go({ by: g })}>
              by {g}
            </button>
          ))}
        </div>
        <label class="inline">
          Period
          <select value={range} onChange={(e) => go({ range: e.currentTarget.value })}>
            {Object.keys(RANGES).map((r) => (
              <option key={r}>{r}</option>
            ))}
          </select>
        </label>
      </div>
      <ErrorBox error={error} />
      <h2>Spend over time</h2>
      {spend === null ? (
        <Loading />
      ) : (
        <div class="spend-charts">
          {spend.map((s) => (
            <SpendChart key={s.by} spend={s} title={`Spend per ${s.bucket} by ${s.by}`} />
          ))}
        </div>
      )}
      <h2>Totals by {by}</h2>
      {rows === null ? (
        <Loading />
      ) : rows.length === 0 ? (
        <p class="muted">No LLM calls recorded in this period.</p>
      ) : (
        <>
          <p class="summary">
            <strong>{usd(total)}</strong> priced spend
            {unpriced ? (
              <>
                {" "}
                · <Badge kind="unpriced">{unpriced} unpriced calls</Badge> not included (their models have no price)
              </>
            ) : null}
          </p>
          <Bars
            title={`Cost by ${by}`}
            bars={rows.slice(0, 20).map((r) => ({
              label: visible(r.key), // SVG text: hidden characters as tokens, never raw
              value: Number(r.cost_usd),
              text: r.unpriced_calls && r.unpriced_calls === r.calls ? "unpriced" : usd(r.cost_usd),
              flag: r.unpriced_calls && r.unpriced_calls !== r.calls ? `+${r.unpriced_calls} unpriced` : undefined,
            }))}
          />
          <div class="scroll">
            <table class="events">
              <Head cols={[by, "LLM calls", "input tokens", "cached", "output tokens", "reasoning", "cost"]} />
              <tbody>
                {rows.map((r) => (
                  <tr key={r.key}>
                    <td>
                      {by === "session" ? (
                        <a href={href(["sessions", r.key])}>
                          <Text text={r.key} />
                        </a>
                      ) : (
                        <Text text={r.key} />
                      )}
                    </td>
                    <td>{count(r.calls)}</td>
                    <td>{count(r.input_tokens)}</td>
                    <td>{count(r.cached_input_tokens)}</td>
                    <td>{count(r.output_tokens)}</td>
                    <td>{count(r.reasoning_tokens)}</td>
                    <td>
                      <Spend cost={r.cost_usd} calls={r.calls} unpriced={r.unpriced_calls} />
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </>
      )}
      <h2>Budgets in use</h2>
      <p class="muted">
        A session budget is in use when its session (one of the 200 most recently active) made LLM calls; an agent
        budget when its agent made LLM calls within the budget's window. The {BUDGETS_SHOWN} most used are shown.
      </p>
      {budgets === null ? (
        <Loading />
      ) : budgets.length === 0 ? (
        <p class="muted">
          No budget is in use: no active policy sets one (<code>budgets.session</code> or <code>budgets.agent</code>)
          for the agents that made LLM calls recently.
        </p>
      ) : (
        <div class="scroll">
          <table class="events budgets">
            <Head cols={["budget", "of", "limit", "spent", "used"]} />
            <tbody>
              {budgets.map((b) => (
                <tr key={`${b.kind}:${b.subject}`}>
                  <td>
                    {b.kind}
                    {b.window_seconds ? ` (last ${duration(b.window_seconds)})` : ""}
                  </td>
                  <td>
                    {b.kind === "session" ? (
                      <a href={href(["sessions", b.subject])}>
                        <Text text={b.subject} />
                      </a>
                    ) : (
                      <Text text={b.subject} />
                    )}
                  </td>
                  <td>
                    {[b.max_cost_usd ? usd(b.max_cost_usd, true) : null, b.max_tokens ? `${count(b.max_tokens)} tokens` : null]
                      .filter(Boolean)
                      .join(" · ")}
                  </td>
                  <td>
                    <Spend cost={b.cost_usd} calls={b.calls} unpriced={b.unpriced_calls} /> · {count(b.tokens)} tokens
                  </td>
                  <td>
                    <meter min={0} max={1} low={0.7} high={0.9} optimum={0} value={Math.min(b.used, 1)} />{" "}
                    {Math.round(b.used * 100)}%
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
