"""Run code in a real Jupyter kernel through a Jupyter server's REST API and websocket: the
text it prints and displays (streams, Markdown and plain displays, errors)."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx


async def run_in_kernel(url: str, token: str, code: str, timeout: float = 60) -> str:
    """Start a kernel at ``url`` (a Jupyter server, or a hub user's ``/user/<name>``), run
    ``code`` in it with ``token``, and stop it again."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    headers = {"Authorization": f"token {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout) as c:
        kernel = (await c.post("/api/kernels", json={"name": "python3"})).json()
        try:
            ws_url = url.replace("http", "ws", 1) + f"/api/kernels/{kernel['id']}/channels"
            ws = await websocket_connect(HTTPRequest(ws_url, headers=headers))
            msg_id, session = uuid.uuid4().hex, uuid.uuid4().hex
            header = {"msg_id": msg_id, "msg_type": "execute_request", "username": "t",
                      "session": session, "version": "5.3", "date": ""}  # fmt: skip
            content = {"code": code, "silent": False, "store_history": False,
                       "user_expressions": {}, "allow_stdin": False}  # fmt: skip
            message = {"header": header, "parent_header": {}, "metadata": {},
                       "content": content, "channel": "shell"}  # fmt: skip
            await ws.write_message(json.dumps(message))
            out: list[str] = []
            while True:
                raw = await asyncio.wait_for(ws.read_message(), timeout)
                assert raw is not None, "the kernel's websocket closed"
                reply = json.loads(raw)
                if reply.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, body = reply["header"]["msg_type"], reply["content"]
                if kind == "stream":
                    out.append(body["text"])
                elif kind in ("display_data", "update_display_data", "execute_result"):
                    data = body.get("data", {})
                    out.append(data.get("text/markdown") or data.get("text/plain") or "")
                elif kind == "error":
                    out.append("ERROR " + body["evalue"])
                elif kind == "status" and body["execution_state"] == "idle":
                    break
            ws.close()
            return "".join(out)
        finally:
            await c.delete(f"/api/kernels/{kernel['id']}")
