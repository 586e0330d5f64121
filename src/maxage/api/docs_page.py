"""The offline ``/docs`` page: a small HTML shell and script that render /openapi.json."""

DOCS_HTML = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>maxage API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px/1.5 system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#222}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
.op{margin:.6rem 0;padding:.5rem .8rem;border:1px solid #e3e3e3;border-radius:6px}
.m{display:inline-block;min-width:4.5rem;font-weight:700;font-family:monospace}
.get{color:#0a7}.post{color:#07c}.put{color:#a60}.patch{color:#a0a}.delete{color:#c22}
code,pre{font-family:ui-monospace,monospace;font-size:13px}pre{background:#f6f6f6;padding:.6rem;overflow:auto}
details summary{cursor:pointer}
</style></head><body><h1>maxage API</h1><p id="desc">Loading /openapi.json\xe2\x80\xa6</p>
<div id="ops"></div><script src="/docs/app.js"></script></body></html>
"""

DOCS_JS = b"""(async function(){
const spec = await (await fetch('/openapi.json')).json();
const esc = s => String(s).replace(/[&<>"]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
document.getElementById('desc').textContent = spec.info.description || '';
const out = [];
for (const [path, item] of Object.entries(spec.paths)) {
  out.push('<h2><code>' + esc(path) + '</code></h2>');
  for (const [method, op] of Object.entries(item)) {
    if (method === 'parameters') continue;
    const params = [...(item.parameters||[]), ...(op.parameters||[])].map(p => p.$ref ? p.$ref.split('/').pop() : p.name + ' (' + p.in + ')');
    const responses = Object.entries(op.responses||{}).map(([s, r]) => '<li><b>' + esc(s) + '</b> ' + esc(r.description||'') + '</li>').join('');
    let body = '';
    if (op.requestBody) { body = '<details><summary>request body</summary><pre>' + esc(JSON.stringify(op.requestBody.content, null, 2)) + '</pre></details>'; }
    out.push('<div class="op"><span class="m ' + method + '">' + method.toUpperCase() + '</span> ' + esc(op.summary||'') +
      '<div>parameters: ' + esc(params.join(', ') || 'none') + '</div>' + body + '<ul>' + responses + '</ul></div>');
  }
}
out.push('<h2>Schemas</h2><pre>' + esc(JSON.stringify(spec.components.schemas, null, 2)) + '</pre>');
document.getElementById('ops').innerHTML = out.join('');
})();
"""
