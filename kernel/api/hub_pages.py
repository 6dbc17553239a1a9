"""The hub service's two pages: personal keys and usage. Plain HTML with a few lines of
script that call the same JSON routes (same origin, the hub's cookie)."""

from __future__ import annotations

import datetime
from html import escape
from typing import Any

_STYLE = (
    "body{font:15px system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem}"
    "table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.3rem .5rem;"
    "border-bottom:1px solid #ddd}code{background:#f3f3f3;padding:.2rem .4rem;word-break:all}"
)


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>{escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>{body}</body></html>"
    )


def _when(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def keys(user: str, found: list[dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td>{escape(k['name'])}</td><td>{_when(k['created'])}</td><td>"
        f"<button data-id='{escape(k['id'])}' class=revoke>revoke</button></td></tr>"
        for k in found
    )
    return _page(
        "Personal keys",
        f"<h1>Personal keys of {escape(user)}</h1>"
        "<p>A key works like your hub login with any OpenAI or Ollama client: base URL "
        "<code id=base></code>. It carries your groups and quotas; it is shown once.</p>"
        "<p><input id=name maxlength=100 placeholder='what it is for'> "
        "<button id=mint>make a key</button></p><p id=made></p>"
        f"<table><tr><th>name</th><th>made</th><th></th></tr>{rows}</table>"
        "<script>"
        "document.getElementById('base').textContent=new URL('v1',location.href).href;"
        "const call=(m,u,b)=>fetch(u,{method:m,headers:{'Content-Type':'application/json'},"
        "body:b&&JSON.stringify(b)}).then(r=>r.json());"
        "document.getElementById('mint').onclick=async()=>{const k=await call('POST','keys',"
        "{name:document.getElementById('name').value||'key'});"
        "document.getElementById('made').textContent=k.key?'Your new key: '+k.key:k.error};"
        "for(const b of document.querySelectorAll('.revoke'))b.onclick=async()=>{"
        "await call('DELETE','keys/'+b.dataset.id);location.reload()};"
        "</script>",
    )


def usage(user: str, report: list[dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td>{escape(r['user'])}</td><td>{escape(r['model'])}</td><td>{r['requests']}</td>"
        f"<td>{r['prompt_tokens']}</td><td>{r['completion_tokens']}</td>"
        f"<td>{r['tokens_today']}</td></tr>"
        for r in report
    )
    return _page(
        "Usage",
        f"<h1>Usage ({escape(user)})</h1><table><tr><th>user</th><th>model</th>"
        "<th>requests</th><th>prompt tokens</th><th>answer tokens</th><th>tokens today</th>"
        f"</tr>{rows}</table>",
    )
