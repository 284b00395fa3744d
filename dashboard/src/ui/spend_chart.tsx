// Spend over time as a uPlot chart (a canvas: nothing in it is markup), with our own legend, in
// which names are text with hidden characters shown as tokens, and the numbers as a table for
// keyboards and screen readers. uPlot sizes its elements through CSSOM (`element.style`), which the
// Content-Security-Policy allows; its stylesheet is bundled into ours.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { count, usd, when } from "../format";
import type { Spend, SpendSeries } from "../types";
import { visible } from "../visible";
import { Head, Spend as Money } from "./common";
import { Text } from "./value";

// Eight colours at 3:1 or more against white, each far from the others; the rest together in grey.
const COLOURS = ["#2453d6", "#b42318", "#137a3a", "#9a6100", "#7a3fb8", "#0b7285", "#c2255c", "#5c6b00"];
const OTHERS = "#6b7587";
const HEIGHT = 220;

const colour = (s: SpendSeries, i: number) => (s.key === null ? OTHERS : COLOURS[i % COLOURS.length]);

function name(s: SpendSeries, by: string): string {
  return s.key ?? `${count(s.others)} other ${by}s`;
}

// A bucket's start as a person reads it: the day, or the day and hour.
function bucketName(us: number, bucket: Spend["bucket"]): string {
  return bucket === "day" ? when(us).slice(0, 10) : `${when(us).slice(0, 13)}:00`;
}

function css(name: string, fallback: string): string {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
}

export function SpendChart({ spend, title }: { spend: Spend; title: string }) {
  const box = useRef<HTMLDivElement>(null);
  const [hover, setHover] = useState<number | null>(null);
  const by = spend.by;
  useEffect(() => {
    const el = box.current;
    if (!el || !spend.buckets.length || !spend.series.length) return;
    const ink = css("--ink", "#1c2330");
    const line = css("--line", "#dfe3ea");
    // A bucket whose every call was unpriced has no cost to draw: a gap, never $0.
    const ys = spend.series.map((s) =>
      s.cost_usd.map((c, i) => (s.calls[i] > 0 && s.unpriced_calls[i] === s.calls[i] ? null : Number(c))),
    );
    const axis = { stroke: ink, grid: { stroke: line, width: 1 }, ticks: { stroke: line, width: 1 } };
    const plot = new uPlot(
      {
        width: el.clientWidth,
        height: HEIGHT,
        legend: { show: false },
        cursor: { drag: { x: false, y: false } },
        scales: {
          x: { time: true },
          y: { range: (_u, _min, max) => uPlot.rangeNum(0, max > 0 ? max : 0.0001, 0.1, true) },
        },
        axes: [axis, { ...axis, size: 72, values: (_u, splits) => splits.map((v) => usd(v)) }],
        series: [
          {},
          ...spend.series.map((s, i) => ({
            label: visible(name(s, by)), // never drawn (no legend), but hidden characters as tokens all the same
            stroke: colour(s, i),
            width: 2,
            points: { show: true, size: 5, fill: colour(s, i) },
          })),
        ],
        hooks: { setCursor: [(u: uPlot) => setHover(u.cursor.idx ?? null)] },
      },
      [spend.buckets.map((b) => b / 1e6), ...ys],
      el,
    );
    const resized = new ResizeObserver(() => plot.setSize({ width: el.clientWidth, height: HEIGHT }));
    resized.observe(el);
    return () => {
      resized.disconnect();
      plot.destroy();
    };
  }, [spend]);

  const summary = useMemo(
    () =>
      `${title}: ` +
      spend.series.map((s) => `${visible(name(s, by))} ${s.total_calls === s.total_unpriced && s.total_calls ? "unpriced" : usd(s.total_usd)}`).join(", "),
    [spend, title],
  );
  const at = hover !== null && hover >= 0 && hover < spend.buckets.length ? hover : null;
  const captionId = `spend-by-${by}`;
  return (
    <figure class="chart spend-chart" aria-labelledby={captionId}>
      <figcaption id={captionId}>{title}</figcaption>
      {spend.series.length === 0 ? (
        <p class="muted">No LLM calls in this period.</p>
      ) : (
        <>
          <div class="spend-plot" ref={box} role="img" aria-label={summary} />
          <p class="spend-when">
            {at === null ? "Whole period" : bucketName(spend.buckets[at], spend.bucket)}
          </p>
          <ul class="spend-legend">
            {spend.series.map((s, i) => (
              <li key={s.key ?? "\u0000others"}>
                <svg width="12" height="12" aria-hidden="true">
                  <rect width="12" height="12" rx="2" fill={colour(s, i)} />
                </svg>{" "}
                <Text text={name(s, by)} />{" "}
                <span class="spend-value">
                  {at === null ? (
                    <Money cost={s.total_usd} calls={s.total_calls} unpriced={s.total_unpriced} />
                  ) : (
                    <Money cost={s.cost_usd[at]} calls={s.calls[at]} unpriced={s.unpriced_calls[at]} />
                  )}
                </span>
              </li>
            ))}
          </ul>
          <details class="spend-numbers">
            <summary>The numbers, per {spend.bucket}</summary>
            <div class="scroll">
              <table class="spend-table">
                <Head cols={[spend.bucket, ...spend.series.map((s) => visible(name(s, by)))]} />
                <tbody>
                  {spend.buckets.map((b, i) =>
                    spend.series.some((s) => s.calls[i] > 0) ? (
                      <tr key={b}>
                        <th scope="row" class="nowrap">
                          {bucketName(b, spend.bucket)}
                        </th>
                        {spend.series.map((s) => (
                          <td key={s.key ?? "\u0000others"}>
                            <Money cost={s.cost_usd[i]} calls={s.calls[i]} unpriced={s.unpriced_calls[i]} />
                          </td>
                        ))}
                      </tr>
                    ) : null,
                  )}
                </tbody>
              </table>
            </div>
          </details>
        </>
      )}
    </figure>
  );
}
