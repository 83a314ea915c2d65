// The top-activations view. Defined by the page: DIGITS, root (the view's element), D (its data).
// D.neurons[i] = {id, top, kth, n, ex: [{v, doc, pos, c, t: [token index], a: [value]}]};
// D.vocab[j] is the text of token index j.
const table = root.querySelector('table.neurons');
const list = root.querySelector('.examples');
const readout = root.querySelector('.readout');
const orderSel = root.querySelector('select.order');
const COLS = [['id', 'neuron'], ['top', 'top value'], ['kth', `value #${D.k}`], ['n', 'examples']];
let order = D.neurons.map((_, i) => i), sortKey = null, descending = true, chosen = 0;
function esc(s) { const d = document.createElement('span'); d.textContent = s; return d.innerHTML; }
function renderTable() {
  let html = '<tr>' + COLS.map(([k, name]) => `<th class="sortable${k === sortKey ? ' sorted' : ''}" data-key="${k}">${name}</th>`).join('') + '</tr>';
  for (const i of order) {
    const n = D.neurons[i];
    html += `<tr data-index="${i}" data-neuron="${n.id}" class="${i === chosen ? 'chosen' : ''}">`
      + `<td>${n.id}</td><td data-value="${mlvFmt(n.top)}">${mlvFmt(n.top)}</td>`
      + `<td data-value="${mlvFmt(n.kth)}">${mlvFmt(n.kth)}</td><td>${n.n}</td></tr>`;
  }
  table.innerHTML = html;
  table.querySelectorAll('th').forEach(th => th.addEventListener('click', () => sortBy(th.dataset.key)));
  table.querySelectorAll('tr[data-index]').forEach(tr => tr.addEventListener('click', () => choose(+tr.dataset.index)));
}
function sortBy(key) {
  descending = (key === sortKey) ? !descending : true; sortKey = key;
  const val = i => { const v = D.neurons[i][key]; return v === null ? -Infinity : v; };
  order = D.neurons.map((_, i) => i).sort((a, b) => (descending ? val(b) - val(a) : val(a) - val(b)) || a - b);
  renderTable();
}
function choose(i) { chosen = i; renderTable(); renderExamples(); }
function renderExamples() {
  const n = D.neurons[chosen];
  let lim = 0; n.ex.forEach(e => e.a.forEach(v => { if (v !== null) lim = Math.max(lim, Math.abs(v)); }));
  let rank = n.ex.map((_, r) => r);
  if (orderSel.value === 'document') rank.sort((a, b) => n.ex[a].doc - n.ex[b].doc || n.ex[a].pos - n.ex[b].pos);
  list.innerHTML = '';
  list.dataset.neuron = n.id;
  for (const r of rank) {
    const e = n.ex[r];
    const row = document.createElement('div'); row.className = 'ex'; row.dataset.rank = r + 1;
    row.dataset.value = mlvFmt(e.v); row.dataset.doc = e.doc; row.dataset.pos = e.pos;
    const head = document.createElement('span'); head.className = 'where';
    head.textContent = `${String(r + 1).padStart(3)}. ${mlvFmt(e.v).padStart(DIGITS + 4)}  doc ${e.doc} @ ${e.pos}  `;
    row.appendChild(head);
    e.t.forEach((t, j) => {
      const s = document.createElement('span'); s.className = j === e.c ? 'tok centre' : 'tok';
      s.textContent = D.vocab[t]; s.dataset.offset = j - e.c; s.dataset.value = mlvFmt(e.a[j]);
      s.style.background = mlvDiverging(e.a[j] === null ? NaN : e.a[j], lim);
      if (lim > 0 && Math.abs(e.a[j]) > 0.6 * lim) s.style.color = '#fff';
      s.addEventListener('mouseenter', () => {
        readout.textContent = `neuron ${n.id}, example ${r + 1} (doc ${e.doc} @ ${e.pos}): token ${mlvTok(D.vocab[t])} `
          + `at offset ${j - e.c} (position ${e.pos + j - e.c}): ${mlvFmt(e.a[j])}`;
      });
      row.appendChild(s);
    });
    list.appendChild(row);
  }
}
orderSel.addEventListener('change', renderExamples);
renderTable(); renderExamples();
