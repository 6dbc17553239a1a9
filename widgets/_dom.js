// What every widget's ES module shares. widgets/_common.py `module()` puts this file in front
// of each one: anywidget loads a widget's module as one blob, so it cannot import a sibling.

const DASH = "–";

function h(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = text;
  return e;
}

const ms = (v) => (v == null ? DASH : `${v < 10 ? v.toFixed(1) : Math.round(v)} ms`);
const tps = (v) => (v == null ? DASH : `${v.toFixed(1)} tok/s`);

function bytes(v) {
  if (!v) return DASH;
  if (v >= 2 ** 30) return `${(v / 2 ** 30).toFixed(2)} GiB`;
  return `${(v / 2 ** 20).toFixed(1)} MiB`;
}
