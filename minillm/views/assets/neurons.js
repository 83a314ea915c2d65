// The neurons view. Defined by the page: DIGITS, root (the view's element), D (its data).
const sel = root.querySelector('select.neuron');
const toks = root.querySelector('.tokens');
const readout = root.querySelector('.readout');
const range = root.querySelector('.range');
function render() {
  const i = +sel.value, vals = D.values[i];
  const lim = Math.max(...vals.map(v => Math.abs(v)));
  toks.innerHTML = '';
  vals.forEach((v, p) => {
    const s = document.createElement('span'); s.className = 'tok'; s.textContent = D.tokens[p];
    s.dataset.pos = p; s.dataset.value = mlvFmt(v);
    s.style.background = mlvDiverging(v, lim);
    s.title = `position ${p} ${mlvTok(D.tokens[p])}: ${mlvFmt(v)}`;
    s.addEventListener('mouseenter', () => {
      readout.textContent = `neuron ${D.layer}:${D.neurons[i]} at position ${p} ${mlvTok(D.tokens[p])}: ${mlvFmt(v)}`;
      readout.dataset.pos = p;
    });
    toks.appendChild(s);
  });
  const top = vals.indexOf(Math.max(...vals));
  range.textContent = `max ${mlvFmt(Math.max(...vals))} at ${mlvTok(D.tokens[top])}, min ${mlvFmt(Math.min(...vals))}`;
}
sel.addEventListener('change', render);
render();
