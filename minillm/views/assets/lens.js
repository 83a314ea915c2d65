// The lens view. Defined by the page: DIGITS, root (the view's element), D (its data).
const table = root.querySelector('table.grid');
const readout = root.querySelector('.readout');
const colourSel = root.querySelector('select.colour');
function value(r, c) {
  const m = colourSel.value;
  if (m === 'top1') return D.top_probs[r][c][0];
  const j = +m.slice(1);
  if (m[0] === 'p') return D.target_probs[r][c][j];
  return 1 - Math.log10(D.target_ranks[r][c][j]) / Math.log10(50000);   // rank 1 = full colour
}
function render() {
  let html = '<tr><th>layer</th>' + D.tokens.map((t, c) => `<th data-pos="${c}">${esc(t)}</th>`).join('') + '</tr>';
  for (let r = D.rows.length - 1; r >= 0; r--) {
    html += `<tr><th>${D.rows[r]}</th>`;
    for (let c = 0; c < D.tokens.length; c++) {
      const v = value(r, c);
      const bg = mlvBlue(v);
      html += `<td data-row="${r}" data-pos="${c}" style="background:${bg};color:${v > 0.6 ? '#fff' : '#000'}">`
            + `${esc(D.top_tokens[r][c][0].slice(0, 10))}</td>`;
    }
    html += '</tr>';
  }
  table.innerHTML = html;
  table.querySelectorAll('td').forEach(td => td.addEventListener('mouseenter', () => show(+td.dataset.row, +td.dataset.pos)));
}
function esc(s) { const d = document.createElement('span'); d.textContent = s; return d.innerHTML; }
function show(r, c) {
  const lines = [`${D.rows[r]}, position ${c} ${mlvTok(D.tokens[c])}: top ${D.top_tokens[r][c].length}`];
  D.top_tokens[r][c].forEach((t, i) => lines.push(`  ${String(i + 1).padStart(2)}. ${mlvTok(t).padEnd(16)} ${mlvFmt(D.top_probs[r][c][i])}`));
  D.targets.forEach((t, j) => lines.push(`  target ${mlvTok(t)}: p = ${mlvFmt(D.target_probs[r][c][j])}, rank ${D.target_ranks[r][c][j]}`));
  readout.textContent = lines.join('\n');
  readout.dataset.row = r; readout.dataset.pos = c;
}
colourSel.addEventListener('change', render);
render();
