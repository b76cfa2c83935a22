/**
 * Inline SVG charts for the HTML report, drawn here as text so the report needs no script and
 * no network to show them: a vertical grouped bar chart (linear or logarithmic) and a
 * horizontal bar chart. Every bar carries its numbers in data- attributes and a <title>
 * tooltip; a bar with no value (a combination that did not run) is drawn as a grey cross.
 */

export interface Bar {
  /** Its value, or null when the combination did not run. */
  value: number | null;
  /** A colour, or a paint server such as "url(#hatch-off)". */
  fill: string;
  /** Tooltip text. */
  title: string;
  /** Written as data-* attributes. */
  data: Record<string, string>;
  /** Space before this bar, in bar widths (to separate formats within a group). */
  gapBefore?: number;
  /** Another class beside "bar", for a look of its own (a pale bar, another engine's bar). */
  className?: string;
}

function barClass(bar: Bar): string {
  return bar.className ? `bar ${bar.className}` : 'bar';
}

export interface BarGroup {
  label: string;
  bars: Bar[];
}

export function esc(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function attrs(data: Record<string, string>): string {
  return Object.entries(data)
    .map(([k, v]) => ` data-${k}="${esc(v)}"`)
    .join('');
}

const fmt = (n: number) => Number(n.toFixed(2)).toString();

/** 1, 2 or 5 times a power of ten, just above max / count. */
function niceStep(max: number, count: number): number {
  const raw = max / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * power >= raw) return m * power;
  return 10 * power;
}

export function tickText(v: number): string {
  if (v >= 1e6) return `${Number((v / 1e6).toPrecision(3))}M`;
  if (v >= 1e4) return `${Number((v / 1e3).toPrecision(3))}k`;
  return Number(v.toPrecision(3)).toString();
}

interface Scale {
  ticks: number[];
  y: (v: number) => number;
}

function linearScale(max: number, top: number, bottom: number): Scale {
  const step = niceStep(max > 0 ? max : 1, 5);
  const end = Math.max(step, Math.ceil((max > 0 ? max : 1) / step) * step);
  const ticks: number[] = [];
  for (let v = 0; v <= end + step / 2; v += step) ticks.push(v);
  return { ticks, y: (v) => bottom - (Math.max(0, v) / end) * (bottom - top) };
}

function logScale(min: number, max: number, top: number, bottom: number): Scale {
  const lo = Math.floor(Math.log10(min > 0 ? min : 1));
  const hi = Math.max(lo + 1, Math.ceil(Math.log10(max > 0 ? max : 10)));
  const ticks: number[] = [];
  for (let e = lo; e <= hi; e++) ticks.push(10 ** e);
  return {
    ticks,
    y: (v) => (v <= 0 ? bottom : bottom - ((Math.log10(v) - lo) / (hi - lo)) * (bottom - top)),
  };
}

export interface GroupedChartOptions {
  groups: BarGroup[];
  unit: string;
  scale: 'linear' | 'log';
  label: string;
  width?: number;
  height?: number;
}

export function groupedBarChart(options: GroupedChartOptions): string {
  const width = options.width ?? 640;
  const height = options.height ?? 260;
  // Room for tick labels and group names at a size that stays readable when the chart is scaled
  // down to a column of the page (the style sheet sets them in these viewBox units).
  const left = 64;
  const right = 8;
  const top = 12;
  const bottom = height - 40;
  const values = options.groups.flatMap((g) => g.bars.map((b) => b.value ?? 0)).filter((v) => v > 0);
  const max = values.length ? Math.max(...values) : 1;
  const min = values.length ? Math.min(...values) : 1;
  const scale = options.scale === 'log' ? logScale(min, max, top, bottom) : linearScale(max, top, bottom);
  const groupWidth = (width - left - right) / Math.max(1, options.groups.length);
  const parts: string[] = [];
  parts.push(
    `<svg class="chart chart-${options.scale}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${width} ${height}" ` +
      `role="img" aria-label="${esc(options.label)}" data-scale="${options.scale}">`,
  );
  for (const t of scale.ticks) {
    const y = fmt(scale.y(t));
    parts.push(`<line class="grid" x1="${left}" x2="${width - right}" y1="${y}" y2="${y}"/>`);
    parts.push(
      `<text class="tick" x="${left - 4}" y="${y}" text-anchor="end" dominant-baseline="middle">${tickText(t)}</text>`,
    );
  }
  parts.push(
    `<text class="unit" x="14" y="${fmt((top + bottom) / 2)}" transform="rotate(-90 14 ${fmt((top + bottom) / 2)})" text-anchor="middle">${esc(options.unit)}</text>`,
  );
  options.groups.forEach((group, gi) => {
    const x0 = left + gi * groupWidth;
    const slots = group.bars.reduce((n, b) => n + 1 + (b.gapBefore ?? 0), 0);
    const barWidth = (groupWidth * 0.84) / Math.max(1, slots);
    let x = x0 + groupWidth * 0.08;
    parts.push(`<g class="group" data-group="${esc(group.label)}">`);
    for (const bar of group.bars) {
      x += (bar.gapBefore ?? 0) * barWidth;
      if (bar.value === null) {
        const cx = x + barWidth / 2;
        const cy = bottom - 6;
        parts.push(
          `<g class="missing"${attrs(bar.data)}><title>${esc(bar.title)}</title>` +
            `<path d="M${fmt(cx - 3)} ${fmt(cy - 3)}l6 6m0 -6l-6 6"/></g>`,
        );
      } else {
        const y = scale.y(bar.value);
        parts.push(
          `<rect class="${barClass(bar)}" x="${fmt(x + 0.5)}" y="${fmt(y)}" width="${fmt(Math.max(1, barWidth - 1))}" ` +
            `height="${fmt(Math.max(0, bottom - y))}" fill="${bar.fill}" data-value="${bar.value}"${attrs(bar.data)}>` +
            `<title>${esc(bar.title)}</title></rect>`,
        );
      }
      x += barWidth;
    }
    parts.push(
      `<text class="group-label" x="${fmt(x0 + groupWidth / 2)}" y="${bottom + 24}" text-anchor="middle">${esc(group.label)}</text></g>`,
    );
  });
  parts.push(`<line class="axis" x1="${left}" x2="${width - right}" y1="${bottom}" y2="${bottom}"/>`);
  parts.push('</svg>');
  return parts.join('');
}

export interface HorizontalRow {
  label: string;
  bars: Bar[];
}

/** Rows of one or more thin bars each, on one linear scale, with the value printed after each bar. */
export function horizontalBarChart(options: {
  rows: HorizontalRow[];
  label: string;
  valueText: (v: number) => string;
  width?: number;
}): string {
  const width = options.width ?? 320;
  const left = 96;
  const right = 64;
  const barHeight = 9;
  const rowHeight = Math.max(...options.rows.map((r) => r.bars.length), 1) * (barHeight + 2) + 8;
  const height = options.rows.length * rowHeight + 8;
  const max = Math.max(1e-12, ...options.rows.flatMap((r) => r.bars.map((b) => b.value ?? 0)));
  const w = (v: number) => (Math.max(0, v) / max) * (width - left - right);
  const parts: string[] = [
    `<svg class="chart chart-horizontal" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${width} ${height}" role="img" aria-label="${esc(options.label)}">`,
  ];
  options.rows.forEach((row, ri) => {
    const y0 = 4 + ri * rowHeight;
    parts.push(
      `<text class="row-label" x="${left - 6}" y="${fmt(y0 + (rowHeight - 8) / 2)}" text-anchor="end" dominant-baseline="middle">${esc(row.label)}</text>`,
    );
    row.bars.forEach((bar, bi) => {
      const y = y0 + bi * (barHeight + 2);
      if (bar.value === null) {
        parts.push(
          `<text class="missing-text" x="${left}" y="${fmt(y + barHeight / 2)}" dominant-baseline="middle"${attrs(bar.data)}><title>${esc(bar.title)}</title>n/a</text>`,
        );
        return;
      }
      const bw = Math.max(1, w(bar.value));
      parts.push(
        `<rect class="${barClass(bar)}" x="${left}" y="${fmt(y)}" width="${fmt(bw)}" height="${barHeight}" fill="${bar.fill}" data-value="${bar.value}"${attrs(bar.data)}><title>${esc(bar.title)}</title></rect>`,
      );
      parts.push(
        `<text class="value" x="${fmt(left + bw + 4)}" y="${fmt(y + barHeight / 2)}" dominant-baseline="middle">${esc(options.valueText(bar.value))}</text>`,
      );
    });
  });
  parts.push('</svg>');
  return parts.join('');
}
