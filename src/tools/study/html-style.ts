/**
 * The HTML report's look: its style sheet, its few lines of script (linear/log switch, table
 * sorting) and the paints of the bars (Okabe–Ito colours by preallocation, raw solid, qcow2
 * hatched).
 */
import type { Preallocation } from '../../block/preallocation.js';
import type { StudyFormat } from './matrix.js';

/** Okabe–Ito colours, distinguishable with the common colour-vision deficiencies. */
export const PREALLOC_COLOR: Record<Preallocation, string> = {
  off: '#E69F00',
  metadata: '#56B4E9',
  falloc: '#009E73',
  full: '#0072B2',
};

export function fillOf(format: StudyFormat, prealloc: Preallocation): string {
  return format === 'raw' ? PREALLOC_COLOR[prealloc] : `url(#hatch-${prealloc})`;
}

export const CSS = `
:root{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2430;background:#fbfbfc}
body{margin:0 auto;max-width:1400px;padding:16px 24px}
h1{font-size:22px;margin:4px 0}h2{font-size:17px;margin:22px 0 8px}h3{font-size:14px;margin:0 0 2px}
.meta{color:#596273;margin:2px 0}code{font:12px ui-monospace,monospace;background:#eef0f3;padding:1px 4px;border-radius:3px}
.busy{background:#fff4e5;border-left:4px solid #E69F00;padding:6px 12px;border-radius:4px}
.recommendation{background:#eef6ee;border-left:4px solid #009E73;padding:8px 14px;border-radius:4px}
.recommendation p{margin:6px 0}
.controls{display:flex;flex-wrap:wrap;gap:16px;align-items:center;margin:14px 0 6px}
.legend{display:flex;flex-wrap:wrap;gap:12px;align-items:center}.legend svg{vertical-align:middle}
.layout{display:grid;grid-template-columns:minmax(0,1fr) 340px;gap:20px;align-items:start}
@media (max-width:1000px){.layout{grid-template-columns:1fr}}.layout.single{grid-template-columns:1fr}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(440px,1fr));gap:14px}
figure{margin:0;background:#fff;border:1px solid #e1e4e8;border-radius:6px;padding:8px 10px}
figcaption{font-size:12px;color:#596273;margin-bottom:4px}
aside{position:sticky;top:8px;display:flex;flex-direction:column;gap:14px}
svg.chart{width:100%;height:auto;display:block}
svg.chart-log{display:none}body.log svg.chart-log{display:block}body.log svg.chart-linear{display:none}
.grid{stroke:#e6e8eb}.axis{stroke:#8a93a0}.tick,.value,.row-label{font-size:10px;fill:#4a5260}
.unit{font-size:10px;fill:#596273}.group-label{font-size:11px;fill:#1d2430}
svg.chart-linear .tick,svg.chart-log .tick,svg.chart-linear .unit,svg.chart-log .unit{font-size:15px}
svg.chart-linear .group-label,svg.chart-log .group-label{font-size:16px}
.missing path{stroke:#9aa1ab;stroke-width:1.5}.missing-text{font-size:10px;fill:#9aa1ab}
.bar:hover{opacity:.8}.bar-new{opacity:.45}
table{border-collapse:collapse;font-size:12px;background:#fff}th,td{padding:3px 7px;border-bottom:1px solid #e6e8eb;text-align:right;white-space:nowrap}
th{cursor:pointer;background:#f1f3f5;position:sticky;top:0}td.l,th.l{text-align:left}
tr.not-run td{color:#8a6d3b}.volatile{color:#b42318}.durable{color:#05603a}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:0}dt{color:#596273}dd{margin:0}
.table-wrap{overflow-x:auto}
.pair{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:14px}
.pair>section{margin:0}.pair h3{margin:0 0 4px}
.charts .wide{grid-column:1/-1}
.bar.engine-qemu{fill-opacity:.45;stroke:#1d2430;stroke-width:.7}
.notice{background:#fdecea;border-left:4px solid #b42318;padding:6px 12px;border-radius:4px}
table.agreement td.below{color:#b42318;font-weight:600}
td.tied{color:#596273}
table.ranking th{white-space:normal;vertical-align:bottom;padding:3px 5px}table.ranking td{padding:3px 5px}
.unit-head{font-weight:normal;color:#596273}
`;

export const SCRIPT = `
(function(){
  var box=document.getElementById('log-scale');
  box.addEventListener('change',function(){document.body.classList.toggle('log',box.checked);});
  document.querySelectorAll('table.sortable th').forEach(function(th,i){
    th.addEventListener('click',function(){
      var body=th.closest('table').tBodies[0];
      var rows=Array.prototype.slice.call(body.rows);
      var dir=th.dataset.dir==='desc'?1:-1;th.dataset.dir=dir===1?'asc':'desc';
      rows.sort(function(a,b){
        var x=a.cells[i],y=b.cells[i];if(!x||!y)return 0;
        var p=parseFloat(x.dataset.sort),q=parseFloat(y.dataset.sort);
        if(isNaN(p)&&isNaN(q))return x.textContent.localeCompare(y.textContent)*dir;
        if(isNaN(p))return 1;if(isNaN(q))return -1;return (p-q)*dir;
      });
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
})();
`;

/** The hatch patterns of qcow2 bars, defined once per page. */
export function patterns(): string {
  const defs = Object.entries(PREALLOC_COLOR)
    .map(
      ([name, color]) =>
        `<pattern id="hatch-${name}" patternUnits="userSpaceOnUse" width="6" height="6" patternTransform="rotate(45)">` +
        `<rect width="6" height="6" fill="${color}"/><rect width="2.2" height="6" fill="#ffffff" fill-opacity="0.6"/></pattern>`,
    )
    .join('');
  return `<svg width="0" height="0" style="position:absolute" aria-hidden="true"><defs>${defs}</defs></svg>`;
}
