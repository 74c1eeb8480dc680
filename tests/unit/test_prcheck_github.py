"""The GitHub side of `reconciler pr-check`: escaped workflow commands, the pull request from the
event file, and one comment kept up to date through the REST API (a fake API on 127.0.0.1)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.gitops import github
from tests.harness.fake_github import TOKEN, FakeGitHub, fake_github

MARKER = github.comment_marker("desired")


@pytest.fixture
def api() -> Iterator[FakeGitHub]:
    with fake_github() as state:
        yield state


def environ(api: FakeGitHub, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "GITHUB_API_URL": api.url,
        "GITHUB_REPOSITORY": "acme/pbx",
        "GITHUB_TOKEN": TOKEN,
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
        **extra,
    }


PR = github.PullRequest(number=7, base_sha="a" * 40, head_sha="b" * 40, base_ref="main")


def test_a_message_with_a_line_break_cannot_start_a_second_workflow_command() -> None:
    line = github.workflow_command(
        "error", "bad key\n::add-mask::oops\r\n100%", file="desired/a.yaml", line=3
    )
    assert "\n" not in line and "\r" not in line
    assert line == "::error file=desired/a.yaml,line=3::bad key%0A::add-mask::oops%0D%0A100%25"


def test_a_file_name_with_colons_and_commas_cannot_add_a_property_to_the_annotation() -> None:
    line = github.workflow_command("error", "m", file="desired/x,line=99:y.yaml", line=2, title="a:b,c")
    assert line == "::error file=desired/x%2Cline=99%3Ay.yaml,line=2,title=a%3Ab%2Cc::m"


def test_a_problem_of_a_whole_file_is_annotated_on_the_file_without_a_line() -> None:
    assert (
        github.workflow_command("error", "m", file="desired/a.yaml", line=0)
        == "::error file=desired/a.yaml::m"
    )


def test_the_pull_request_comes_from_the_event_file(tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_text(
        json.dumps(
            {
                "pull_request": {
                    "number": 12,
                    "base": {"sha": "1" * 40, "ref": "main"},
                    "head": {"sha": "2" * 40},
                }
            }
        )
    )
    pr = github.pull_request_from_event({"GITHUB_EVENT_PATH": str(event)})
    assert pr == github.PullRequest(12, "1" * 40, "2" * 40, "main")


def test_a_push_event_or_no_event_file_is_not_a_pull_request(tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"ref": "refs/heads/main", "commits": []}))
    assert github.pull_request_from_event({"GITHUB_EVENT_PATH": str(event)}) is None
    assert github.pull_request_from_event({"GITHUB_EVENT_PATH": str(tmp_path / "missing.json")}) is None
    assert github.pull_request_from_event({}) is None


def test_the_first_run_creates_one_comment_and_the_next_run_edits_that_same_comment(
    api: FakeGitHub, tmp_path: Path
) -> None:
    first = github.publish(environ(api, tmp_path), PR, MARKER, "plan one\n")
    second = github.publish(environ(api, tmp_path), PR, MARKER, "plan two\n")
    assert not first.warning and not second.warning
    assert "created" in first.message and "updated" in second.message
    assert len(api.on(7)) == 1
    assert api.on(7)[0]["body"] == f"{MARKER}\nplan two\n"
    assert (api.count("POST"), api.count("PATCH")) == (1, 1)
    assert not (tmp_path / "summary.md").exists()  # a comment was possible: no fallback


def test_the_previous_comment_is_found_on_a_later_page_of_comments(api: FakeGitHub, tmp_path: Path) -> None:
    for i in range(github.PER_PAGE + 5):
        api.add_comment(7, f"discussion {i}")
    ours = api.add_comment(7, f"{MARKER}\nold plan\n", login="github-actions[bot]")
    github.publish(environ(api, tmp_path), PR, MARKER, "new plan\n")
    assert ours["body"] == f"{MARKER}\nnew plan\n"
    assert api.count("POST") == 0 and len(api.on(7)) == github.PER_PAGE + 6


def test_a_comment_that_only_quotes_the_marker_is_not_taken_over(api: FakeGitHub, tmp_path: Path) -> None:
    quoted = api.add_comment(7, f"> {MARKER}\n> what does this mean?")
    github.publish(environ(api, tmp_path), PR, MARKER, "plan\n")
    assert quoted["body"].startswith("> ")
    assert len(api.on(7)) == 2


def test_another_pull_requests_comment_is_never_edited(api: FakeGitHub, tmp_path: Path) -> None:
    other = api.add_comment(8, f"{MARKER}\nplan of #8\n")
    github.publish(environ(api, tmp_path), PR, MARKER, "plan of #7\n")
    assert other["body"] == f"{MARKER}\nplan of #8\n"
    assert [c["body"] for c in api.on(7)] == [f"{MARKER}\nplan of #7\n"]


def test_without_permission_to_comment_the_report_goes_to_the_job_summary_and_says_why(
    api: FakeGitHub, tmp_path: Path
) -> None:
    api.refuse_writes = True
    published = github.publish(environ(api, tmp_path), PR, MARKER, "the plan\n")
    assert published.warning
    assert "HTTP 403" in published.message and "job summary" in published.message
    assert "pull-requests: write" in published.message
    assert (tmp_path / "summary.md").read_text() == "the plan\n"
    assert api.on(7) == []


def test_a_wrong_token_is_reported_without_showing_it(api: FakeGitHub, tmp_path: Path) -> None:
    published = github.publish(environ(api, tmp_path, GITHUB_TOKEN="wrong-token-value"), PR, MARKER, "p\n")
    assert published.warning and "HTTP 401" in published.message and "Bad credentials" in published.message
    assert "wrong-token-value" not in published.message


def test_without_a_token_the_report_goes_to_the_job_summary(tmp_path: Path) -> None:
    env = {"GITHUB_REPOSITORY": "acme/pbx", "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")}
    published = github.publish(env, PR, MARKER, "the plan\n")
    assert published.warning and "no GITHUB_TOKEN" in published.message
    assert (tmp_path / "summary.md").read_text() == "the plan\n"


def test_an_unreachable_api_does_not_fail_the_check_but_says_so(tmp_path: Path) -> None:
    with fake_github() as gone:
        url = gone.url
    env = {"GITHUB_API_URL": url, "GITHUB_REPOSITORY": "acme/pbx", "GITHUB_TOKEN": TOKEN}
    published = github.publish(env, PR, MARKER, "the plan\n")
    assert (
        published.warning and "cannot reach" in published.message and "only in this log" in published.message
    )


def test_the_token_is_not_sent_to_a_pagination_link_on_another_server(api: FakeGitHub) -> None:
    client = github.GitHubComments(api.url, "acme/pbx", TOKEN)
    with fake_github() as elsewhere:
        with pytest.raises(github.CommentFailed, match="refusing to send the token"):
            client._request("GET", f"{elsewhere.url}/repos/acme/pbx/issues/7/comments")
        assert elsewhere.requests == []
