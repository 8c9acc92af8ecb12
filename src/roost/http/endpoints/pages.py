"""The two pages mail links open when the app sets no link of its own.

Each page only carries the token from its URL into a POST to the JSON API, so following a
link (or a mail scanner fetching it) changes nothing until a person presses the button.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>body{{font:16px system-ui;max-width:28rem;margin:3rem auto;padding:0 1rem}}
input,button{{font:inherit;padding:.5rem;width:100%;box-sizing:border-box;margin:.3rem 0}}</style>
</head><body><h1>{title}</h1>
<form id="form">{fields}<button>{action}</button></form><p id="result" role="status"></p>
<script>
const token = new URLSearchParams(location.search).get("token") || "";
document.getElementById("form").addEventListener("submit", async (event) => {{
  event.preventDefault();
  const body = {{token}};
  for (const input of event.target.querySelectorAll("input")) body[input.name] = input.value;
  const answer = await fetch("{endpoint}", {{method: "POST",
    headers: {{"Content-Type": "application/json"}}, body: JSON.stringify(body)}});
  const result = document.getElementById("result");
  result.textContent = answer.ok ? "{done}" : (await answer.json()).detail;
}});
</script></body></html>
"""
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline';"
    " style-src 'unsafe-inline'; connect-src 'self'; form-action 'none'",
}


def _page(title: str, fields: str, action: str, endpoint: str, done: str) -> Response:
    html = PAGE.format(title=title, fields=fields, action=action, endpoint=endpoint, done=done)
    return HTMLResponse(html, headers=SECURITY_HEADERS)


async def reset_password(request: Request) -> Response:
    return _page(
        "Choose a new password",
        '<input name="password" type="password" autocomplete="new-password" minlength="10"'
        ' required placeholder="New password">',
        "Set password",
        "/api/auth/password/reset",
        "Done. Sign in with your new password.",
    )


async def verify_email(request: Request) -> Response:
    return _page(
        "Confirm your email address",
        "",
        "Confirm",
        "/api/auth/verify/confirm",
        "Thank you: your address is confirmed.",
    )
