// dom.js: tiny helpers the demo's modules share: build elements, find them, format numbers.

export const $ = (id) => document.getElementById(id);

/** An element: h("td", {class: "num", "data-value": "1"}, "1.00"); null/false attributes are left out. */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "style") node.style.cssText = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined));
  return node;
}

export const mb = (n) => (n >= 1e9 ? `${(n / 1e9).toFixed(2)} GB` : n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : n >= 1e3 ? `${(n / 1e3).toFixed(1)} kB` : `${n} B`);
export const ms = (t) => (t === null || t === undefined ? "—" : t >= 1000 ? `${(t / 1000).toFixed(2)} s` : `${t < 10 ? t.toFixed(1) : Math.round(t)} ms`);
export const count = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
export const sci = (x) => (x === 0 ? "0" : x < 1e-3 ? x.toExponential(1) : x.toFixed(4));

export function debounce(fn, wait) {
  let timer;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(fn, wait);
  };
}
