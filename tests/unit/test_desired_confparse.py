"""Asterisk config text → sections, as Asterisk's own parser reads it."""

from __future__ import annotations

from reconciler.desired.confparse import parse_conf


def test_sections_templates_and_ordered_options_are_parsed() -> None:
    text = (
        "; header\n"
        "[ext-endpoint](!)\n"
        "type = endpoint\n"
        "disallow = all\n"
        "allow = ulaw\n"
        "\n"
        "[4001](ext-endpoint, nat)  ; inherits\n"
        'callerid = "Sales" <4001>\n'
        "match = 1.2.3.4\n"
        "match = 5.6.7.8\n"
    )
    template, ext = parse_conf(text)
    assert (template.name, template.templates, template.is_template, template.line) == (
        "ext-endpoint",
        ("!",),
        True,
        2,
    )
    assert template.options == [("type", "endpoint"), ("disallow", "all"), ("allow", "ulaw")]
    assert (ext.name, ext.templates, ext.is_template) == ("4001", ("ext-endpoint", "nat"), False)
    assert ext.get("callerid") == '"Sales" <4001>'
    assert ext.get_all("match") == ["1.2.3.4", "5.6.7.8"]
    assert ext.type is None


def test_an_escaped_semicolon_is_part_of_the_value_and_a_bare_one_starts_a_comment() -> None:
    [section] = parse_conf("[t]\ncontact = sip:h:5061\\;transport=tls ; the trunk\nserver_uri = sip:h;cut\n")
    assert section.options == [("contact", "sip:h:5061;transport=tls"), ("server_uri", "sip:h")]


def test_dialplan_arrows_and_block_comments_are_understood() -> None:
    text = "[internal]\nexten => 911,1,NoOp(x)\n same => n,Hangup()\n;-- a\nblock --;\ninclude => other\n"
    [ctx] = parse_conf(text)
    assert ctx.options == [("exten", "911,1,NoOp(x)"), ("same", "n,Hangup()"), ("include", "other")]


def test_directives_and_lines_without_equals_are_kept_visible() -> None:
    [stub, bad] = parse_conf("#tryinclude managed/pjsip.conf\n[x]\ngarbage line\n")
    assert stub.name == "" and stub.options == [("#tryinclude", "managed/pjsip.conf")]
    assert bad.options == [("garbage line", "")]
