// Helpers every minillm view uses (inlined into each page): colours and number formatting.
// DIGITS, root (the view's element) and D (its data) are defined by the page.
function mlvBlue(v) {            // 0..1 -> white..blue
  const t = Math.max(0, Math.min(1, v)); const c = Math.round(255 * (1 - t));
  return `rgb(${c},${Math.round(255 - 120 * t)},255)`;
}
function mlvDiverging(v, lim) {  // red for +, blue for -, white at 0
  if (!isFinite(v) || lim <= 0) return '#eeeeee';
  const t = Math.max(-1, Math.min(1, v / lim)); const a = Math.round(255 * (1 - Math.abs(t)));
  return t > 0 ? `rgb(255,${a},${a})` : `rgb(${a},${a},255)`;
}
function mlvFmt(v) { return (v === null || v === undefined) ? 'nan' : Number(v).toFixed(DIGITS); }
function mlvTok(s) { return JSON.stringify(s); }
function mlvText(v) { return (0.299 * v[0] + 0.587 * v[1] + 0.114 * v[2]) < 140 ? '#fff' : '#000'; }
