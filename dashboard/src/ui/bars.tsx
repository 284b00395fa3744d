// A horizontal bar chart in plain SVG: one bar per row, labelled, with the value written out.
export interface Bar {
  label: string;
  value: number;
  text: string;
  flag?: string;
}

export function Bars({ bars, title }: { bars: Bar[]; title: string }) {
  const max = Math.max(...bars.map((b) => b.value), 0) || 1;
  const row = 26;
  const height = bars.length * row + 4;
  return (
    <figure class="chart">
      <figcaption>{title}</figcaption>
      <svg role="img" aria-label={title} viewBox={`0 0 600 ${height}`} preserveAspectRatio="xMinYMin meet">
        {bars.map((b, i) => (
          <g key={b.label} transform={`translate(0 ${i * row + 2})`}>
            <text x="0" y="16" class="chart-label">
              {b.label.length > 28 ? b.label.slice(0, 27) + "…" : b.label}
            </text>
            <rect x="200" y="3" height="18" width={Math.max(1, (b.value / max) * 300)} class="chart-bar" />
            <text x={206 + (b.value / max) * 300} y="16" class="chart-value">
              {b.text}
              {b.flag ? ` (${b.flag})` : ""}
            </text>
          </g>
        ))}
      </svg>
    </figure>
  );
}
