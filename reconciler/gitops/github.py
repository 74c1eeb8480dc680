"""GitHub for the pull-request check: workflow commands, the pull request, one kept-up-to-date comment.

- Workflow commands (`::error file=F,line=L::message`) are escaped by GitHub's own rules
  (actions/toolkit `command.ts`), so text from a desired file can neither end the command early
  nor start another one on a new line.
- The pull request (number, base and head commits) comes from the event file `GITHUB_EVENT_PATH`.
- The comment is found again by a hidden marker on its first line and edited in place on every
  push. Three REST calls do not justify a client library: stdlib `urllib`, and the token is only
  ever sent to `GITHUB_API_URL` (a pagination link to another host is not followed).
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

DEFAULT_API_URL = "https://api.github.com"
API_VERSION = "2022-11-28"
PER_PAGE = 100
MAX_PAGES = 30  # 3,000 comments: more than any pull request has
TIMEOUT_S = 30.0
# GitHub refuses a comment body over 65,536 characters.
MAX_COMMENT_CHARS = 65_000


def escape_data(text: str) -> str:
    """A workflow command's message: `%`, CR and LF encoded, so it stays one command."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A workflow command's property value: also `:` and `,`, which end a property."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def workflow_command(
    command: Literal["error", "warning", "notice"],
    message: str,
    *,
    file: str | None = None,
    line: int | None = None,
    title: str | None = None,
) -> str:
    """`::error file=F,line=L,title=T::message`, every part escaped."""
    props = []
    if file:
        props.append(f"file={escape_property(file)}")
    if file and line and line > 0:
        props.append(f"line={int(line)}")
    if title:
        props.append(f"title={escape_property(title)}")
    head = f"{command} {','.join(props)}" if props else command
    return f"::{head}::{escape_data(message)}"


def without_commands(text: str) -> tuple[str, str, str]:
    """(start, text, end): lines that make the runner ignore workflow commands in `text`
    (`::stop-commands::<token>` ... `::<token>::`), for echoing output that quotes user data."""
    token = secrets.token_hex(16)
    return f"::stop-commands::{token}", text, f"::{token}::"


@dataclass(frozen=True)
class PullRequest:
    number: int
    base_sha: str | None
    head_sha: str | None
    base_ref: str | None


def pull_request_from_event(environ: Mapping[str, str]) -> PullRequest | None:
    """The pull request of a `pull_request`/`pull_request_target` run, from `GITHUB_EVENT_PATH`;
    None outside such a run (no event file, or an event without a pull request)."""
    path = environ.get("GITHUB_EVENT_PATH")
    if not path:
        return None
    try:
        event = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    pr = event.get("pull_request") if isinstance(event, dict) else None
    if not isinstance(pr, dict) or not isinstance(pr.get("number"), int):
        return None
    base_raw, head_raw = pr.get("base"), pr.get("head")
    base: dict[str, Any] = base_raw if isinstance(base_raw, dict) else {}
    head: dict[str, Any] = head_raw if isinstance(head_raw, dict) else {}
    return PullRequest(
        number=pr["number"],
        base_sha=base.get("sha") if isinstance(base.get("sha"), str) else None,
        head_sha=head.get("sha") if isinstance(head.get("sha"), str) else None,
        base_ref=base.get("ref") if isinstance(base.get("ref"), str) else None,
    )


class CommentFailed(Exception):
    """The comment could not be written (no permission, bad token, API unreachable)."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class CommentResult:
    action: Literal["created", "updated"]
    comment_id: int
    url: str


def comment_marker(key: str) -> str:
    """The hidden first line that identifies this check's comment (one per desired dir)."""
    safe = re.sub(r"[^A-Za-z0-9._/-]", "_", key)[:200]
    return f"<!-- asterisk-gitops:pr-check {safe} -->"


class GitHubComments:
    """Create or update the one comment of this check on a pull request."""

    def __init__(self, api_url: str, repository: str, token: str, timeout_s: float = TIMEOUT_S) -> None:
        self.api_url = api_url.rstrip("/")
        self.repository = repository
        self._token = token
        self.timeout_s = timeout_s

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> GitHubComments | None:
        """The client for this run, or None without `GITHUB_TOKEN` or `GITHUB_REPOSITORY`."""
        token, repository = environ.get("GITHUB_TOKEN"), environ.get("GITHUB_REPOSITORY")
        if not token or not repository:
            return None
        return cls(environ.get("GITHUB_API_URL") or DEFAULT_API_URL, repository, token)

    def _request(self, method: str, url: str, body: dict[str, Any] | None = None) -> tuple[Any, str]:
        """(decoded JSON, Link header) of one API call; `CommentFailed` on any failure."""
        if not url.startswith(self.api_url + "/"):
            raise CommentFailed(f"refusing to send the token to {url.split('?')[0]}")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Accept", "application/vnd.github+json")
        request.add_header("Authorization", f"Bearer {self._token}")
        request.add_header("X-GitHub-Api-Version", API_VERSION)
        request.add_header("User-Agent", "asterisk-gitops-pr-check")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                text = response.read().decode("utf-8", "replace")
                link = response.headers.get("Link") or ""
        except urllib.error.HTTPError as exc:
            detail = ""
            with contextlib.suppress(ValueError, AttributeError, OSError):
                detail = str(json.loads(exc.read().decode("utf-8", "replace")).get("message", ""))
            raise CommentFailed(
                f"HTTP {exc.code} from {method} {url.split('?')[0]}" + (f": {detail}" if detail else ""),
                exc.code,
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CommentFailed(f"cannot reach {self.api_url}: {reason}") from None
        try:
            return (json.loads(text) if text.strip() else None), link
        except ValueError:
            raise CommentFailed(f"{method} {url.split('?')[0]} did not answer JSON") from None

    def find(self, pr: int, marker: str) -> dict[str, Any] | None:
        """The oldest comment of `pr` whose body starts with `marker`, following pagination."""
        url: str | None = f"{self.api_url}/repos/{self.repository}/issues/{pr}/comments?per_page={PER_PAGE}"
        for _ in range(MAX_PAGES):
            if url is None:
                break
            page, link = self._request("GET", url)
            for comment in page if isinstance(page, list) else []:
                if isinstance(comment, dict) and str(comment.get("body") or "").startswith(marker):
                    return comment
            match = re.search(r'<([^>]+)>;\s*rel="next"', link)
            url = match[1] if match else None
        return None

    def upsert(self, pr: int, marker: str, body: str) -> CommentResult:
        """Update the comment that carries `marker`, or create it: one comment per pull request."""
        text = body if body.startswith(marker) else f"{marker}\n{body}"
        existing = self.find(pr, marker)
        if existing is not None:
            answer, _ = self._request(
                "PATCH",
                f"{self.api_url}/repos/{self.repository}/issues/comments/{existing['id']}",
                {"body": text},
            )
            action: Literal["created", "updated"] = "updated"
        else:
            answer, _ = self._request(
                "POST", f"{self.api_url}/repos/{self.repository}/issues/{pr}/comments", {"body": text}
            )
            action = "created"
        if not isinstance(answer, dict) or not isinstance(answer.get("id"), int):
            raise CommentFailed(f"the API did not return the {action} comment")
        return CommentResult(action, answer["id"], str(answer.get("html_url") or ""))


def append_job_summary(environ: Mapping[str, str], markdown: str) -> bool:
    """Append `markdown` to the job summary (`GITHUB_STEP_SUMMARY`); False outside Actions."""
    path = environ.get("GITHUB_STEP_SUMMARY")
    if not path:
        return False
    try:
        with open(path, "a", encoding="utf-8") as summary:
            summary.write(markdown if markdown.endswith("\n") else markdown + "\n")
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class Published:
    """Where the report went, in one line for the log; `warning` when it is not where asked."""

    message: str
    warning: bool = False


def publish(environ: Mapping[str, str], pr: PullRequest | None, marker: str, body: str) -> Published:
    """Post `body` as the one comment of this check on `pr` (updated in place on every push). With
    no pull request, no token or no permission, fall back to the job summary and say so."""
    if pr is None:
        where = " in the job summary" if append_job_summary(environ, body) else " above"
        return Published(f"not running for a pull request: no comment, the report is{where}")
    client = GitHubComments.from_environ(environ)
    if client is None:
        where = "in the job summary" if append_job_summary(environ, body) else "only in this log"
        return Published(
            f"no GITHUB_TOKEN or GITHUB_REPOSITORY: no comment on pull request #{pr.number}, the report is "
            f"{where}; give the step `env: GITHUB_TOKEN: ${{{{ github.token }}}}`",
            warning=True,
        )
    try:
        result = client.upsert(pr.number, marker, body)
    except CommentFailed as exc:
        where = "in the job summary" if append_job_summary(environ, body) else "only in this log"
        hint = (
            "the workflow needs `permissions: pull-requests: write` (a pull request from a fork gets a "
            "read-only token)"
            if exc.status in (401, 403, 404)
            else "the API may be down; the next push tries again"
        )
        return Published(
            f"cannot comment on pull request #{pr.number} ({exc.reason}): the report is {where}; {hint}",
            warning=True,
        )
    return Published(f"{result.action} the check's comment on pull request #{pr.number}: {result.url}")
