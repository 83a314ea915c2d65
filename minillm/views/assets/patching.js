// The patching view. Defined by the page: DIGITS, root (the view's element), D (its data).
const table = root.querySelector('table.grid');
const readout = root.querySelector('.readout');
let lim = 0; D.values.forEach(r => r.forEach(v => { if (v !== null) lim = Math.max(lim, Math.abs(v)); }));
let order = D.rows.map((_, i) => i), sortCol = -1, descending = true;
function esc(s) { const d = document.createElement('span'); d.textContent = s; return d.innerHTML; }
function render() {
  let html = `<tr><th class="sortable corner">${esc(D.axes[0])} \\ ${esc(D.axes[1])}</th>`
    + D.cols.map((c, j) => `<th class="sortable col${j === sortCol ? ' sorted' : ''}" data-col="${j}">${esc(c)}</th>`).join('') + '</tr>';
  for (const i of order) {
    html += `<tr data-row="${i}"><th>${esc(D.rows[i])}</th>`;
    D.values[i].forEach((v, j) => {
      html += `<td data-row="${i}" data-col="${j}" data-value="${mlvFmt(v)}" style="background:${mlvDiverging(v === null ? NaN : v, lim)}">${mlvFmt(v).replace(/0+$/, '').replace(/\.$/, '')}</td>`;
    });
    html += '</tr>';
  }
  table.innerHTML = html;
  table.querySelectorAll('td').forEach(td => td.addEventListener('mouseenter', () => {
    const i = +td.dataset.row, j = +td.dataset.col;
    readout.textContent = D.meaning.replace('{row}', D.rows[i]).replace('{col}', D.cols[j]).replace('{value}', mlvFmt(D.values[i][j]));
    readout.dataset.row = i; readout.dataset.col = j;
  }));
  table.querySelectorAll('th.col').forEach(th => th.addEventListener('click', () => sortBy(+th.dataset.col)));
  table.querySelector('th.corner').addEventListener('click', () => { order = D.rows.map((_, i) => i); sortCol = -1; render(); });
}
function sortBy(j) {
  descending = (j === sortCol) ? !descending : true; sortCol = j;
  const key = i => D.values[i][j] === null ? -Infinity : D.values[i][j];
  order = D.rows.map((_, i) => i).sort((a, b) => descending ? key(b) - key(a) || a - b : key(a) - key(b) || a - b);
  render();
}
render();
