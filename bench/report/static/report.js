(function(){
const template = JSON.parse(document.getElementById('template').textContent);
const drawn = new Set();
function drawOne(div){
  const id = div.dataset.fig;
  if (drawn.has(id) || div.offsetParent === null) return;
  drawn.add(id);
  const f = JSON.parse(document.getElementById('fig-' + id).textContent);
  f.layout.template = template;
  Plotly.newPlot(div, f.data, f.layout, {displaylogo:false, responsive:true});
}
// a chart is drawn when it scrolls into view: a 200-run page opens without drawing them all
const seen = ('IntersectionObserver' in window) ? new IntersectionObserver(function(entries){
  entries.forEach(function(e){ if (e.isIntersecting) drawOne(e.target); });
}, {rootMargin: '400px'}) : null;
function draw(root){
  root.querySelectorAll('div.plot[data-fig]').forEach(function(div){
    if (seen) { seen.unobserve(div); seen.observe(div); } else drawOne(div);
  });
}
// a run's page is kept as inert text until it is opened: a 200-run report stays a small DOM
function runPage(id){
  let page = document.getElementById(id);
  if (page) return page;
  const src = document.getElementById('src-' + id);
  if (!src) return null;
  const holder = document.createElement('div');
  holder.innerHTML = src.textContent.split('<' + String.fromCharCode(92) + '/').join('</');
  page = holder.firstElementChild;
  document.body.insertBefore(page, document.getElementById('template'));
  makeSortable(page);
  return page;
}
function route(){
  const id = decodeURIComponent(location.hash.slice(1));
  const page = id.startsWith('run-') ? runPage(id) : null;
  document.querySelectorAll('section.run-page.shown').forEach(p => p.classList.remove('shown'));
  if (page) { page.classList.add('shown'); page.scrollIntoView(); }
  document.body.classList.toggle('on-run', !!page);
  draw(page || document.getElementById('overview'));
}
function cellValue(td){
  const t = td.dataset.sort !== undefined ? td.dataset.sort : td.textContent.trim();
  const n = parseFloat(t.replace(/[^0-9eE+.\-]/g, ''));
  return (t !== '' && /^[-+]?[0-9.]/.test(t) && !isNaN(n)) ? n : t.toLowerCase();
}
function makeSortable(root){
root.querySelectorAll('table.sortable').forEach(function(table){
  table.querySelectorAll('th').forEach(function(th, col){
    th.addEventListener('click', function(){
      const asc = !th.classList.contains('asc');
      table.querySelectorAll('th').forEach(h => h.classList.remove('asc', 'desc'));
      th.classList.add(asc ? 'asc' : 'desc');
      const body = table.tBodies[0];
      const rows = Array.from(body.rows);
      rows.sort(function(a, b){
        const x = cellValue(a.cells[col]), y = cellValue(b.cells[col]);
        if (x === y) return 0;
        if (x === '' ) return 1; if (y === '') return -1;
        return (x < y ? -1 : 1) * (asc ? 1 : -1);
      });
      rows.forEach(r => body.appendChild(r));
    });
  });
});
}
makeSortable(document.getElementById('overview'));
function applyFilters(){
  const ds = document.getElementById('f-dataset').value;
  const model = document.getElementById('f-model').value;
  const text = document.getElementById('f-text').value.toLowerCase();
  document.querySelectorAll('[data-dataset]').forEach(function(el){
    const okDs = !ds || el.dataset.dataset === ds;
    const okModel = !model || !el.dataset.model || el.dataset.model === model;
    const okText = !text || el.tagName !== 'TR' || el.textContent.toLowerCase().includes(text);
    el.style.display = (okDs && okModel && okText) ? '' : 'none';
  });
  draw(document.getElementById('overview'));
}
['f-dataset', 'f-model', 'f-text'].forEach(function(id){
  const el = document.getElementById(id);
  if (el) el.addEventListener('input', applyFilters);
});
window.addEventListener('hashchange', route);
route();
})();
