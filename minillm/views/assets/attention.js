// The attention view. Defined by the page: DIGITS, root (the view's element), D (its data).
const layerSel = root.querySelector('select.layer');
const panels = root.querySelector('.panels');
function shownHeads() {
  return Array.from(root.querySelectorAll('input.head')).filter(b => b.checked).map(b => +b.value);
}
function render() {
  const li = D.layers.indexOf(+layerSel.value);
  panels.innerHTML = '';
  for (const h of shownHeads()) {
    const pat = D.patterns[li][h];
    const panel = document.createElement('div');
    panel.className = 'panel'; panel.dataset.layer = layerSel.value; panel.dataset.head = h;
    const kv = D.group > 1 ? ` (kv-head ${Math.floor(h / D.group)})` : '';
    panel.innerHTML = `<div class="panel-title">layer ${layerSel.value}, head ${h}${kv}</div>`;
    const toks = document.createElement('div'); toks.className = 'tokens';
    const heat = document.createElement('div'); heat.className = 'heat';
    const n = D.tokens.length;
    const cs = Math.max(6, Math.min(20, Math.floor(300 / n)));
    heat.style.gridTemplateColumns = `repeat(${n}, ${cs}px)`;
    heat.style.gridAutoRows = `${cs}px`;
    const readout = document.createElement('div'); readout.className = 'readout';
    D.tokens.forEach((t, i) => {
      const s = document.createElement('span'); s.className = 'tok'; s.textContent = t;
      s.dataset.pos = i; s.title = `position ${i}: ${mlvTok(t)}`;
      s.addEventListener('mouseenter', () => showQuery(toks, readout, heat, pat, i));
      toks.appendChild(s);
    });
    for (let q = 0; q < n; q++) for (let k = 0; k < n; k++) {
      const c = document.createElement('div'); c.style.background = mlvBlue(pat[q][k]);
      c.title = `query ${q} ${mlvTok(D.tokens[q])} -> key ${k} ${mlvTok(D.tokens[k])}: ${mlvFmt(pat[q][k])}`;
      c.addEventListener('mouseenter', () => showQuery(toks, readout, heat, pat, q));
      heat.appendChild(c);
    }
    panel.appendChild(toks); panel.appendChild(heat); panel.appendChild(readout);
    panels.appendChild(panel);
  }
}
function showQuery(toks, readout, heat, pat, q) {
  const spans = toks.querySelectorAll('.tok'), n = spans.length;
  Array.from(heat.children).forEach((c, i) => c.classList.toggle('qrow', Math.floor(i / n) === q));
  spans.forEach((s, k) => {
    const w = k <= q ? pat[q][k] : 0;
    s.style.background = mlvBlue(w); s.style.color = w > 0.6 ? '#fff' : '#000';
    s.dataset.weight = k <= q ? mlvFmt(pat[q][k]) : '';
    s.classList.toggle('query', k === q);
  });
  const lines = [`query ${q} ${mlvTok(D.tokens[q])} attends to:`];
  const order = pat[q].map((w, k) => [w, k]).filter(x => x[1] <= q).sort((a, b) => b[0] - a[0]);
  for (const [w, k] of order.slice(0, 8)) lines.push(`  key ${String(k).padStart(3)} ${mlvTok(D.tokens[k]).padEnd(14)} ${mlvFmt(w)}`);
  readout.textContent = lines.join('\n');
  readout.dataset.query = q;
}
layerSel.addEventListener('change', render);
root.querySelectorAll('input.head').forEach(b => b.addEventListener('change', render));
render();
