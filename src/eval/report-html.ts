import type { Misclassified, Report, ReportRow } from './report.ts';
import { formatCv, formatSecs, intervalCell, paramText, pct, summaryCells, summaryColumns } from './report.ts';

/**
 * report.html: one self-contained page (inline CSS and SVG, images as data: URIs, no scripts,
 * no external references). Pure function of the report plus the thumbnails to embed.
 */

export interface Thumbnail {
  item: Misclassified;
  /** data:image/jpeg;base64,… or null when the image could not be read (a placeholder is shown). */
  dataUri: string | null;
}

const esc = (s: string): string =>
  s.replace(/[&<>"']/g, (ch) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[ch]!);
const f1 = (v: number) => v.toFixed(1);
const trunc = (s: string, n: number) => (s.length > n ? s.slice(0, n - 1) + '…' : s);

const COLORS = { bar: '#6b8fb5', best: '#2f6f3e', extra: '#b58a3c', err: '#222', grid: '#ddd', text: '#333' };

function barColor(r: ReportRow, best: string | null): string {
  return r.name === best ? COLORS.best : r.source === 'extra' ? COLORS.extra : COLORS.bar;
}

/** Horizontal bars of test accuracy on a zoomed axis, with CV mean ± std whiskers when present. */
export function accuracyChart(rows: readonly ReportRow[], best: string | null): string {
  const shown = rows.filter((r) => r.testAccuracy !== null || r.cv);
  if (shown.length === 0) return '<p class="note">No test accuracies to chart.</p>';
  const lows = shown.flatMap((r) => [r.testInterval?.low ?? r.testAccuracy ?? 1, r.cv ? r.cv.mean - r.cv.std : 1]);
  const lo = Math.max(0, Math.floor(Math.min(...lows) * 100 - 1) / 100);
  const hi = 1;
  const span = (hi - lo) * 100;
  const step = span <= 3 ? 0.5 : span <= 10 ? 1 : span <= 30 ? 5 : 10;
  const L = 130,
    W = 480,
    R = 170,
    rowH = 28,
    top = 10,
    axisH = 30;
  const height = top + shown.length * rowH + axisH;
  const x = (v: number) => L + ((Math.min(Math.max(v, lo), hi) - lo) / (hi - lo)) * W;
  const parts: string[] = [];
  for (let t = Math.ceil((lo * 100) / step) * step; t <= hi * 100 + 1e-9; t += step) {
    const xx = x(t / 100);
    parts.push(
      `<line x1="${f1(xx)}" y1="${top}" x2="${f1(xx)}" y2="${top + shown.length * rowH}" stroke="${COLORS.grid}"/>`,
    );
    parts.push(
      `<text x="${f1(xx)}" y="${top + shown.length * rowH + 16}" text-anchor="middle" font-size="11">${t.toFixed(step < 1 ? 1 : 0)}%</text>`,
    );
  }
  shown.forEach((r, i) => {
    const cy = top + i * rowH + rowH / 2;
    parts.push(
      `<text x="${L - 8}" y="${f1(cy + 4)}" text-anchor="end" font-size="12">${esc(trunc(r.name, 18))}</text>`,
    );
    if (r.testAccuracy !== null) {
      parts.push(
        `<rect x="${L}" y="${f1(cy - 9)}" width="${f1(Math.max(1, x(r.testAccuracy) - L))}" height="18" fill="${barColor(r, best)}"><title>${esc(r.name)}: test ${pct(r.testAccuracy)}</title></rect>`,
      );
    }
    if (r.testInterval) {
      const a = x(r.testInterval.low),
        b = x(r.testInterval.high);
      parts.push(
        `<line x1="${f1(a)}" y1="${f1(cy + 11)}" x2="${f1(b)}" y2="${f1(cy + 11)}" stroke="#888" stroke-width="2"><title>${esc(r.name)}: 95% CI ${esc(intervalCell(r))}</title></line>`,
      );
    }
    if (r.cv) {
      const a = x(r.cv.mean - r.cv.std),
        b = x(r.cv.mean + r.cv.std),
        m = x(r.cv.mean);
      parts.push(
        `<g stroke="${COLORS.err}" stroke-width="1.5"><line x1="${f1(a)}" y1="${f1(cy)}" x2="${f1(b)}" y2="${f1(cy)}"/><line x1="${f1(a)}" y1="${f1(cy - 5)}" x2="${f1(a)}" y2="${f1(cy + 5)}"/><line x1="${f1(b)}" y1="${f1(cy - 5)}" x2="${f1(b)}" y2="${f1(cy + 5)}"/></g>`,
      );
      parts.push(
        `<circle cx="${f1(m)}" cy="${f1(cy)}" r="3" fill="#fff" stroke="${COLORS.err}"><title>${esc(r.name)}: CV ${formatCv(r.cv)}</title></circle>`,
      );
    }
    const label = `${pct(r.testAccuracy)}${r.cv ? ` · CV ${formatCv(r.cv)}` : ''}`;
    parts.push(`<text x="${L + W + 8}" y="${f1(cy + 4)}" font-size="12">${esc(label)}</text>`);
  });
  return (
    `<svg width="${L + W + R}" height="${height}" viewBox="0 0 ${L + W + R} ${height}" role="img" aria-label="test accuracy per head">${parts.join('')}</svg>` +
    `<p class="note">Bars: test accuracy (axis starts at ${(lo * 100).toFixed(0)}%, not 0); grey line under each bar: its 95% Wilson interval.${shown.some((r) => r.cv) ? ' Whiskers: cross-validation mean ± std on train+val.' : ''}</p>`
  );
}

/** Fit seconds per head on a log10 axis. */
export function fitTimeChart(rows: readonly ReportRow[]): string {
  const shown = rows.filter((r) => r.fitSeconds !== null);
  if (shown.length === 0) return '<p class="note">No fit times to chart.</p>';
  const vals = shown.map((r) => Math.max(r.fitSeconds!, 1e-4));
  let lo = Math.floor(Math.log10(Math.min(...vals)));
  let hi = Math.ceil(Math.log10(Math.max(...vals)));
  if (hi <= lo) hi = lo + 1;
  if (hi - lo < 2) lo = hi - 2;
  const L = 130,
    W = 480,
    R = 110,
    rowH = 24,
    top = 10,
    axisH = 30;
  const height = top + shown.length * rowH + axisH;
  const x = (v: number) => L + ((Math.log10(Math.max(v, 1e-4)) - lo) / (hi - lo)) * W;
  const parts: string[] = [];
  for (let e = lo; e <= hi; e++) {
    const xx = x(10 ** e);
    parts.push(
      `<line x1="${f1(xx)}" y1="${top}" x2="${f1(xx)}" y2="${top + shown.length * rowH}" stroke="${COLORS.grid}"/>`,
    );
    parts.push(
      `<text x="${f1(xx)}" y="${top + shown.length * rowH + 16}" text-anchor="middle" font-size="11">${e < -2 ? `${10 ** (e + 3)} ms` : `${Number((10 ** e).toPrecision(1))} s`}</text>`,
    );
  }
  shown.forEach((r, i) => {
    const cy = top + i * rowH + rowH / 2;
    const v = Math.max(r.fitSeconds!, 1e-4);
    parts.push(
      `<text x="${L - 8}" y="${f1(cy + 4)}" text-anchor="end" font-size="12">${esc(trunc(r.name, 18))}</text>`,
    );
    parts.push(
      `<rect x="${L}" y="${f1(cy - 8)}" width="${f1(Math.max(1, x(v) - L))}" height="16" fill="${r.source === 'extra' ? COLORS.extra : COLORS.bar}"><title>${esc(r.name)}: ${esc(formatSecs(r.fitSeconds))}</title></rect>`,
    );
    parts.push(`<text x="${L + W + 8}" y="${f1(cy + 4)}" font-size="12">${esc(formatSecs(r.fitSeconds))}</text>`);
  });
  return (
    `<svg width="${L + W + R}" height="${height}" viewBox="0 0 ${L + W + R} ${height}" role="img" aria-label="fit time per head, log scale">${parts.join('')}</svg>` +
    '<p class="note">Fit time (seconds, log scale). Tuning time is not included.</p>'
  );
}

/** One confusion matrix as an SVG grid, cells shaded by the row (true class) share. */
export function confusionSvg(confusion: readonly (readonly number[])[], classes: readonly string[]): string {
  const k = classes.length;
  const cell = k <= 4 ? 48 : k <= 10 ? 36 : 24;
  const L = 90,
    T = 80;
  const w = L + k * cell + 4,
    h = T + k * cell + 4;
  const parts: string[] = [];
  classes.forEach((c, j) => {
    const cx = L + j * cell + cell / 2;
    parts.push(
      `<text transform="translate(${f1(cx + 4)},${T - 6}) rotate(-50)" font-size="11">${esc(trunc(c, 12))}<title>predicted ${esc(c)}</title></text>`,
    );
    parts.push(
      `<text x="${L - 6}" y="${f1(T + j * cell + cell / 2 + 4)}" text-anchor="end" font-size="11">${esc(trunc(c, 12))}<title>true ${esc(c)}</title></text>`,
    );
  });
  confusion.forEach((row, i) => {
    const total = row.reduce((a, b) => a + b, 0);
    row.forEach((n, j) => {
      const share = total > 0 ? n / total : 0;
      const base = i === j ? [47, 111, 62] : [181, 64, 48];
      const fill = `rgba(${base.join(',')},${(0.08 + 0.85 * share).toFixed(3)})`;
      const ink = share > 0.55 ? '#fff' : COLORS.text;
      parts.push(
        `<rect x="${L + j * cell}" y="${T + i * cell}" width="${cell - 2}" height="${cell - 2}" fill="${fill}"><title>true ${esc(classes[i]!)} → predicted ${esc(classes[j]!)}: ${n}</title></rect>`,
      );
      if (cell >= 30)
        parts.push(
          `<text x="${f1(L + j * cell + cell / 2 - 1)}" y="${f1(T + i * cell + cell / 2 + 3)}" text-anchor="middle" font-size="11" fill="${ink}">${n}</text>`,
        );
    });
  });
  return `<svg width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" role="img" aria-label="confusion matrix">${parts.join('')}</svg>`;
}

function summaryTable(r: Report): string {
  const head = summaryColumns(r);
  const rows = r.heads.map((h) => [
    `${h.name === r.chosen ? '<b>' : ''}${esc(h.name)}${h.name === r.chosen ? '</b> <span class="note">(chosen)</span>' : ''}${h.name === r.recommended && h.name !== r.chosen ? ' <span class="note">(recommended)</span>' : ''}${h.source === 'extra' ? ' <span class="note">(extra)</span>' : ''}`,
    ...summaryCells(r, h).map(esc),
    `<code>${esc(paramText(h.params))}</code>`,
  ]);
  return `<table><thead><tr>${head.map((x) => `<th>${esc(x)}</th>`).join('')}</tr></thead><tbody>${rows.map((cells) => `<tr>${cells.map((c, i) => `<td${i > 0 && i < cells.length - 1 ? ' class="num"' : ''}>${c}</td>`).join('')}</tr>`).join('')}</tbody></table>`;
}

function perClassTable(r: Report): string {
  const rows: string[] = [];
  for (const h of r.heads) {
    if (!h.perClass) continue;
    r.cache.classes.forEach((c, i) => {
      const m = h.perClass![c];
      if (!m) return;
      rows.push(
        `<tr>${i === 0 ? `<td rowspan="${r.cache.classes.length}">${esc(h.name)}</td>` : ''}<td>${esc(c)}</td><td class="num">${m.precision.toFixed(4)}</td><td class="num">${m.recall.toFixed(4)}</td><td class="num">${m.f1.toFixed(4)}</td><td class="num">${m.support}</td></tr>`,
      );
    });
  }
  if (rows.length === 0) return '<p class="note">No per-class scores.</p>';
  return `<table><thead><tr><th>head</th><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr></thead><tbody>${rows.join('')}</tbody></table>`;
}

function thumbnailsSection(r: Report, thumbs: readonly Thumbnail[]): string {
  const m = r.misclassified;
  if (!m) return '<p class="note">No trained head was scored on a test split.</p>';
  if (m.total === 0) return `<p>${esc(m.head)} got every test image right.</p>`;
  const figs = thumbs.map((t) => {
    const cap = `${esc(t.item.trueClass)} → ${esc(t.item.predictedClass)} (${(t.item.confidence * 100).toFixed(0)}%)`;
    const img = t.dataUri
      ? `<img src="${t.dataUri}" alt="${esc(t.item.path)}">`
      : `<div class="missing">image not available</div>`;
    return `<figure title="${esc(t.item.path)}">${img}<figcaption>${cap}</figcaption></figure>`;
  });
  return `<p>${esc(m.head)} misclassified ${m.total} test image(s); ${thumbs.length < m.total ? `the ${thumbs.length} most confident mistakes` : 'all of them'} below (true → predicted, confidence in the wrong class).</p><div class="thumbs">${figs.join('')}</div>`;
}

const CSS = `
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#222;max-width:1100px;margin:24px auto;padding:0 16px}
h1{font-size:22px;margin:0 0 8px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.verdict{background:#eef6ef;border-left:4px solid #2f6f3e;padding:10px 14px;font-size:15px}
.note{color:#666;font-size:12px}table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}code{font-size:12px}
.grid{display:flex;flex-wrap:wrap;gap:18px}.grid>div{border:1px solid #eee;padding:8px}.grid h3{font-size:14px;margin:0 0 4px}
.thumbs{display:flex;flex-wrap:wrap;gap:10px}figure{margin:0;width:104px;text-align:center;font-size:11px}
figure img{max-width:96px;max-height:96px;display:block;margin:0 auto;border:1px solid #ccc}
.missing{width:96px;height:96px;margin:0 auto;background:repeating-linear-gradient(45deg,#eee,#eee 6px,#f8f8f8 6px,#f8f8f8 12px);border:1px dashed #aaa;color:#777;display:flex;align-items:center;justify-content:center;font-size:11px}
svg text{fill:#333;font-family:inherit}`;

/** The whole page. */
export function renderHtml(r: Report, thumbs: readonly Thumbnail[]): string {
  const c = r.cache;
  const confusions = r.heads
    .filter((h) => h.confusion)
    .map(
      (h) =>
        `<div><h3>${esc(h.name)} <span class="note">${pct(h.testAccuracy)}</span></h3>${confusionSvg(h.confusion!, c.classes)}</div>`,
    )
    .join('');
  const valDesc =
    r.split.valSource === 'cache'
      ? "the cache's val split"
      : r.split.valSource === 'carved'
        ? `${(r.split.valFraction * 100).toFixed(0)}% of train, stratified, seed ${r.split.seed}`
        : 'none';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>convcache head comparison — ${esc(c.model)} / ${esc(c.layer)}</title><style>${CSS}</style></head>
<body>
<h1>Head comparison — ${esc(c.model)} / ${esc(c.layer)} / ${esc(c.pooling)} (D=${c.D})</h1>
<p class="verdict"><b>Verdict:</b> ${esc(r.verdict)}</p>
<p class="note">Cache <code>${esc(c.dir)}</code> · classes ${esc(c.classes.join(', '))} · ${esc(
    Object.entries(c.counts)
      .map(([s, n]) => `${s} ${n}`)
      .join(', '),
  )} · ${c.skipped} skipped.
Selected on ${r.split.train} training rows scored on validation ${r.split.val} rows (${esc(valDesc)})${r.selection?.by === 'cv' ? ` — by ${r.options.cv}-fold CV on train+val` : ''}${r.heads.some((h) => h.refit) ? ', then refitted on train+val' : ''}; test ${r.split.test} rows, used once, for the final score. McNemar: exact paired test against the chosen head on the same test images (p &gt;= 0.05: tied; b/c = images only the chosen / only this head got right).${r.options.tune ? ` Tuned by ${r.options.tune.by === 'val' ? 'validation accuracy' : `${r.options.tune.folds}-fold CV`}.` : ''}</p>
<h2>Test accuracy</h2>
${accuracyChart(r.heads, r.chosen)}
<h2>Fit time</h2>
${fitTimeChart(r.heads)}
<h2>Summary</h2>
${summaryTable(r)}
<h2>Confusion matrices <span class="note">(rows = true class, columns = predicted; test split)</span></h2>
<div class="grid">${confusions || '<p class="note">none</p>'}</div>
<h2>Per class <span class="note">(test split)</span></h2>
${perClassTable(r)}
<h2>Mistakes of the chosen head</h2>
${thumbnailsSection(r, thumbs)}
<p class="note">Generated by convcache ${esc(r.toolVersion)} at ${esc(r.createdAt)} in ${r.totalSeconds.toFixed(1)} s.</p>
</body></html>
`;
}
